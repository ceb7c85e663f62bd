"""The HTTP skeleton: health, readiness, problem+json for every error."""

from __future__ import annotations

import aiohttp

from eventbus.runtime import EventBusServer


async def test_healthz_and_readyz(http_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{http_url}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}
        async with http.get(f"{http_url}/readyz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ready"}


async def test_unknown_route_and_method_are_problem_json(http_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{http_url}/nowhere") as response:
            assert response.status == 404
            assert response.content_type == "application/problem+json"
            body = await response.json()
            assert body["status"] == 404
            assert body["title"] == "Not Found"
            assert "GET /nowhere" in body["detail"]
            assert body["type"].startswith("https://")
        async with http.post(f"{http_url}/healthz", data=b"{}") as response:
            assert response.status == 405
            assert response.content_type == "application/problem+json"
            assert "GET" in response.headers["Allow"]


async def test_readyz_turns_503_when_the_store_is_gone(server: EventBusServer, http_url: str) -> None:
    await server.store.close()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{http_url}/readyz") as response:
            assert response.status == 503
            body = await response.json(content_type="application/problem+json")
            assert "store" in body["detail"]
        async with http.get(f"{http_url}/healthz") as response:
            assert response.status == 200

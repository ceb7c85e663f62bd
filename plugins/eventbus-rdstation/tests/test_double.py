"""The RD Station API double keeps RD's documented contract (specs §3), spoken to over plain HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Clock
from eventbus_rdstation.testing import EXPIRED_CHALLENGE, RDStationDouble

GRANT = {"client_id": "rd-client", "client_secret": "rd-secret"}
SALE = {"event_type": "SALE", "event_family": "CDP", "payload": {"email": "lead@example.com", "funnel_name": "default"}}
CONVERSION = {
    "event_type": "CONVERSION",
    "event_family": "CDP",
    "payload": {"conversion_identifier": "form", "email": "lead@example.com"},
}
PACKAGE_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: object, headers: dict[str, str] | None = None
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.post(url, json=body, headers=headers) as response:
        text = await response.text()
        try:
            answer = json.loads(text) if text else None
        except ValueError:
            answer = text
        return response.status, answer, response


async def token(http: aiohttp.ClientSession, rd_url: str, refresh_token: str = "rd-refresh-0") -> str:
    status, answer, _ = await post(http, f"{rd_url}/auth/token", {**GRANT, "refresh_token": refresh_token})
    assert status == 200, answer
    return str(answer["access_token"])


async def test_refresh_rotates_the_refresh_token(http: aiohttp.ClientSession, rd_url: str) -> None:
    status, answer, _ = await post(http, f"{rd_url}/auth/token", {**GRANT, "refresh_token": "rd-refresh-0"})
    assert (status, answer) == (
        200,
        {"access_token": "rd-access-1", "expires_in": 86400, "refresh_token": "rd-refresh-1"},
    )

    status, answer, _ = await post(http, f"{rd_url}/auth/token", {**GRANT, "refresh_token": "rd-refresh-0"})
    assert status == 401
    assert answer["errors"]["error_type"] == "INVALID_REFRESH_TOKEN"


async def test_refresh_without_rotation(http: aiohttp.ClientSession, rd_url: str, double: RDStationDouble) -> None:
    double.rotate_refresh_tokens = False
    for _ in range(2):
        _, answer, _ = await post(http, f"{rd_url}/auth/token", {**GRANT, "refresh_token": "rd-refresh-0"})
        assert answer["refresh_token"] == "rd-refresh-0"


async def test_codes_are_single_use_and_clients_checked(
    http: aiohttp.ClientSession, rd_url: str, double: RDStationDouble
) -> None:
    double.codes.add("code-1")
    status, answer, _ = await post(http, f"{rd_url}/auth/token", {**GRANT, "code": "code-1"})
    assert status == 200 and answer["refresh_token"] in double.refresh_tokens
    status, answer, _ = await post(http, f"{rd_url}/auth/token", {**GRANT, "code": "code-1"})
    assert (status, answer["errors"]["error_type"]) == (401, "EXPIRED_CODE_GRANT")
    wrong = {**GRANT, "client_secret": "guess", "refresh_token": "rd-refresh-0"}
    status, answer, _ = await post(http, f"{rd_url}/auth/token", wrong)
    assert (status, answer["errors"]["error_type"]) == (401, "ACCESS_DENIED")
    status, answer, _ = await post(http, f"{rd_url}/auth/token", GRANT)
    assert (status, answer["errors"][0]["path"]) == (400, "$.body.refresh_token")


async def test_events_need_a_valid_bearer_token(
    http: aiohttp.ClientSession, rd_url: str, double: RDStationDouble
) -> None:
    status, answer, response = await post(http, f"{rd_url}/platform/events", SALE)
    assert (status, answer) == (401, {"errors": [{"error_type": "UNAUTHORIZED", "error_message": "Invalid token."}]})
    assert "WWW-Authenticate" not in response.headers

    access = await token(http, rd_url)
    status, answer, _ = await post(http, f"{rd_url}/platform/events", SALE, {"Authorization": f"Bearer {access}"})
    assert status == 200 and len(answer["event_uuid"]) == 36
    assert double.events == [{"event_uuid": answer["event_uuid"], "via": "oauth", **SALE}]

    double.expire_access_tokens()
    status, _, response = await post(http, f"{rd_url}/platform/events", SALE, {"Authorization": f"Bearer {access}"})
    assert status == 401
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="https://api.rd.services/", error="expired_token", error_description="The access token expired"'
    )
    assert response.headers["WWW-Authenticate"] == EXPIRED_CHALLENGE


async def test_tokens_expire_on_the_double_clock(
    http: aiohttp.ClientSession, rd_url: str, double: RDStationDouble, clock: Clock
) -> None:
    double.expires_in = 60
    access = await token(http, rd_url)
    clock.now += 60
    status, _, response = await post(http, f"{rd_url}/platform/events", SALE, {"Authorization": f"Bearer {access}"})
    assert status == 401 and "expired_token" in response.headers["WWW-Authenticate"]


async def test_the_documented_invalid_option_example(http: aiohttp.ClientSession, rd_url: str) -> None:
    access = await token(http, rd_url)
    bad = {**SALE, "event_type": "PURCHASE"}
    status, answer, _ = await post(http, f"{rd_url}/platform/events", bad, {"Authorization": f"Bearer {access}"})
    assert status == 400
    assert answer == {
        "errors": [
            {
                "error_type": "INVALID_OPTION",
                "error_message": "Must be one of the valid options.",
                "validation_rules": {
                    "valid_options": [
                        "CONVERSION",
                        "OPPORTUNITY",
                        "OPPORTUNITY_LOST",
                        "SALE",
                        "ORDER_PLACED",
                        "ORDER_PLACED_ITEM",
                    ]
                },
                "path": "$.body.event_type",
            }
        ]
    }


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({**CONVERSION, "event_family": "MKT"}, [("INVALID_OPTION", "$.body.event_family")]),
        ({**CONVERSION, "payload": {"email": "a@b.c"}}, [("CANNOT_BE_NULL", "$.body.payload.conversion_identifier")]),
        (
            {**CONVERSION, "payload": {"conversion_identifier": " ", "email": None}},
            [("CANNOT_BE_BLANK", "$.body.payload.conversion_identifier"), ("CANNOT_BE_NULL", "$.body.payload.email")],
        ),
        ({**SALE, "payload": {"funnel_name": "default"}}, [("CANNOT_BE_NULL", "$.body.payload.email")]),
        ({"event_type": "CONVERSION", "event_family": "CDP"}, [("CANNOT_BE_NULL", "$.body.payload")]),
    ],
)
async def test_payload_validation(
    http: aiohttp.ClientSession, rd_url: str, body: dict[str, object], errors: list[tuple[str, str]]
) -> None:
    access = await token(http, rd_url)
    status, answer, _ = await post(http, f"{rd_url}/platform/events", body, {"Authorization": f"Bearer {access}"})
    assert status == 400
    assert [(error["error_type"], error["path"]) for error in answer["errors"]] == errors


async def test_conversions_take_an_api_key_and_only_conversions(http: aiohttp.ClientSession, rd_url: str) -> None:
    status, _, _ = await post(http, f"{rd_url}/platform/conversions?api_key=wrong", CONVERSION)
    assert status == 401
    status, answer, _ = await post(http, f"{rd_url}/platform/conversions?api_key=rd-api-key", SALE)
    assert status == 400
    assert answer["errors"][0]["validation_rules"] == {"valid_options": ["CONVERSION"]}
    status, answer, _ = await post(http, f"{rd_url}/platform/conversions?api_key=rd-api-key", CONVERSION)
    assert status == 200 and "event_uuid" in answer


async def test_a_body_over_0_2_mb_is_answered_413(http: aiohttp.ClientSession, rd_url: str) -> None:
    big = {**CONVERSION, "payload": {**CONVERSION["payload"], "cf_notes": "x" * 200_000}}  # type: ignore[dict-item]
    status, answer, _ = await post(http, f"{rd_url}/platform/conversions?api_key=rd-api-key", big)
    assert (status, answer["errors"][0]["error_type"]) == (413, "REQUEST_TOO_LARGE")


async def test_the_rate_limit_per_account(
    http: aiohttp.ClientSession, rd_url: str, double: RDStationDouble, clock: Clock
) -> None:
    double.rate_limit = 2
    url = f"{rd_url}/platform/conversions?api_key=rd-api-key"
    access = await token(http, rd_url)  # the token endpoint is not counted
    assert (await post(http, url, CONVERSION))[0] == 200
    assert (await post(http, f"{rd_url}/platform/events", SALE, {"Authorization": f"Bearer {access}"}))[0] == 200
    clock.now += 14.5
    status, answer, response = await post(http, url, CONVERSION)
    assert (status, answer) == (
        429,
        {"error": "Too Many Requests", "max_requests": 2, "current_usage": 3, "remaining_time_ms": 45500},
    )
    assert "Retry-After" not in response.headers

    double.retry_after_header = True
    status, _, response = await post(http, url, CONVERSION)
    assert (status, response.headers["Retry-After"]) == (429, "46")

    clock.now += 45.5  # a new window
    assert (await post(http, url, CONVERSION))[0] == 200
    double.reset_rate_limit()
    assert (await post(http, url, CONVERSION))[0] == 200


async def test_forced_answers_and_the_request_record(
    http: aiohttp.ClientSession, rd_url: str, double: RDStationDouble
) -> None:
    double.fail_next(500, "<html>oops</html>", times=2, path="/platform/conversions")
    double.fail_next(503, {"message": "maintenance"}, headers={"Retry-After": "7"})
    url = f"{rd_url}/platform/conversions?api_key=rd-api-key"
    async with http.post(url, json=CONVERSION) as response:
        assert (response.status, await response.text()) == (500, "<html>oops</html>")
    status, answer, response = await post(http, f"{rd_url}/auth/token", GRANT)
    assert (status, answer, response.headers["Retry-After"]) == (503, {"message": "maintenance"}, "7")
    assert (await post(http, url, CONVERSION))[0] == 500
    assert (await post(http, url, CONVERSION))[0] == 200
    assert double.forced == []
    assert double.counts == {"/platform/conversions": 3, "/auth/token": 1}
    first = double.requests[0]
    assert (first.method, first.path, first.query, first.json) == (
        "POST",
        "/platform/conversions",
        {"api_key": "rd-api-key"},
        CONVERSION,
    )
    assert first.headers["Content-Type"] == "application/json"


async def test_the_command_line_serves_and_prints_its_url(http: aiohttp.ClientSession) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_DIR), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "eventbus_rdstation.testing", "--port", "0", "--refresh-token", "cli-refresh"]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, env=env)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("RD Station API double on http://127.0.0.1:")
        url = line.split(" on ")[1].strip()
        status, answer, _ = await post(http, f"{url}/auth/token", {**GRANT, "refresh_token": "cli-refresh"})
        assert (status, answer["access_token"]) == (200, "rd-access-1")
    finally:
        process.terminate()
        await process.wait()

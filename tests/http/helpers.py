"""Helpers for the HTTP tests: POST a body and read the JSON answer, list what the bus stored."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from eventbus.model import StoredEvent
from eventbus.runtime import EventBusServer


async def post(
    http_url: str, body: bytes | None, headers: Mapping[str, str], path: str = "/events"
) -> tuple[int, dict[str, Any]]:
    """Status and JSON body (problem+json included) of one POST."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{http_url}{path}", data=body, headers=dict(headers)) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text) if text else {}


async def stored_events(server: EventBusServer) -> list[StoredEvent]:
    """Every event in the log, read through the bus service."""
    events, _ = await server.bus.list_events(page_size=1000)
    return events


def fields(problem: Mapping[str, Any]) -> list[str]:
    """The `field` of every violation a problem+json body names."""
    return [violation["field"] for violation in problem.get("errors", [])]

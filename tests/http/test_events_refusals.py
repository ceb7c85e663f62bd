"""`POST /events` refusals: each a clear 4xx problem+json naming the field or header at fault, nothing stored."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from eventbus.config import ServerSettings
from eventbus.http.events import MAX_REQUEST_BYTES
from eventbus.runtime import EventBusServer
from tests.http.helpers import fields, post, stored_events

BINARY = {"ce-specversion": "1.0", "ce-id": "r-1", "ce-source": "/r", "ce-type": "r.t"}
STRUCTURED = {"Content-Type": "application/cloudevents+json"}
BATCH = {"Content-Type": "application/cloudevents-batch+json"}
EVENT: dict[str, Any] = {"specversion": "1.0", "id": "r-1", "source": "/r", "type": "r.t"}


def without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


def doc(value: object) -> bytes:
    return json.dumps(value).encode()


# (headers, body, status, fields the problem must name)
CASES: dict[str, tuple[dict[str, str], bytes | None, int, list[str]]] = {
    **{
        f"binary-missing-{name}": (without(BINARY, f"ce-{name}"), None, 400, [f"ce-{name}"])
        for name in ("id", "source", "type", "specversion")
    },
    "binary-missing-all": ({"ce-subject": "x"}, None, 400, ["ce-specversion", "ce-id", "ce-source", "ce-type"]),
    **{
        f"structured-missing-{name}": (STRUCTURED, doc(without(EVENT, name)), 400, [name])
        for name in ("id", "source", "type", "specversion")
    },
    "binary-bad-specversion": ({**BINARY, "ce-specversion": "0.3"}, None, 400, ["ce-specversion"]),
    "structured-bad-specversion": (STRUCTURED, doc({**EVENT, "specversion": "0.3"}), 400, ["specversion"]),
    "batch-bad-events": (
        BATCH,
        doc([{**EVENT, "specversion": "2"}, {**EVENT, "id": "ok"}, without(EVENT, "type")]),
        400,
        ["events[0].specversion", "events[2].type"],
    ),
    "percent-lone": ({**BINARY, "ce-subject": "100%"}, None, 400, ["ce-subject"]),
    "percent-not-hex": ({**BINARY, "ce-subject": "a%zzb"}, None, 400, ["ce-subject"]),
    "percent-not-utf8": ({**BINARY, "ce-subject": "caf%E9"}, None, 400, ["ce-subject"]),
    "percent-cut-utf8-in-extension": ({**BINARY, "ce-note": "%E2%82"}, None, 400, ["ce-note"]),
    "binary-bad-time": ({**BINARY, "ce-time": "yesterday"}, None, 400, ["ce-time"]),
    "binary-datacontenttype-header": ({**BINARY, "ce-datacontenttype": "a/b"}, None, 400, ["ce-datacontenttype"]),
    "binary-bad-extension-name": ({**BINARY, "ce-my-ext": "x"}, None, 400, ["ce-my-ext"]),
    "binary-malformed-json-data": ({**BINARY, "Content-Type": "application/json"}, b'{"a": ', 400, ["data"]),
    "binary-json-data-not-utf8": ({**BINARY, "Content-Type": "application/json"}, b'"\xff"', 400, ["data"]),
    "structured-malformed-json": (STRUCTURED, b'{"id": "x",', 400, ["body"]),
    "structured-empty-body": (STRUCTURED, None, 400, ["body"]),
    "structured-not-an-object": (STRUCTURED, doc([EVENT]), 400, ["body"]),
    "structured-invalid-utf8": (STRUCTURED, b'{"specversion": "1.0", "id": "\xff\xfe"}', 400, ["body"]),
    "structured-lone-surrogate": (
        STRUCTURED,
        doc({**EVENT, "id": "\ud800", "x": "\udfff"}),
        400,
        ["id", "extensions.x"],
    ),
    "batch-malformed-json": (BATCH, b"[{]", 400, ["body"]),
    "batch-invalid-utf8": (BATCH, b'[{"id": "\xc3\x28"}]', 400, ["body"]),
    "batch-not-an-array": (BATCH, doc(EVENT), 400, ["body"]),
    "batch-empty": (BATCH, b"[]", 400, ["events"]),
    "batch-over-1000": (BATCH, doc([{**EVENT, "id": str(i)} for i in range(1001)]), 400, ["events"]),
    "plain-json-without-ce-headers": ({"Content-Type": "application/json"}, doc(EVENT), 415, ["content-type"]),
    "form-body": ({"Content-Type": "application/x-www-form-urlencoded"}, b"id=1&type=x", 415, ["content-type"]),
    "no-content-type-no-ce-headers": ({}, b"hello", 415, ["content-type"]),
    "cloudevents-other-format": ({"Content-Type": "application/cloudevents+xml"}, b"<e/>", 415, ["content-type"]),
    "structured-latin1": ({"Content-Type": f"{STRUCTURED['Content-Type']}; charset=latin-1"}, doc(EVENT), 415, []),
    "binary-event-over-1mib": (
        {**BINARY, "Content-Type": "application/octet-stream"},
        b"x" * (1024 * 1024 + 1),
        413,
        ["data"],
    ),
}


@pytest.mark.parametrize(("headers", "body", "status", "named"), list(CASES.values()), ids=list(CASES))
async def test_refusals_are_problem_json_naming_the_fault_and_store_nothing(
    server: EventBusServer, http_url: str, headers: dict[str, str], body: bytes | None, status: int, named: list[str]
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{http_url}/events", data=body, headers=headers) as response,
    ):
        assert response.status == status, await response.text()
        assert response.content_type == "application/problem+json"
        problem = await response.json(content_type=None)
    assert problem["status"] == status
    assert problem["detail"]
    assert set(named) <= set(fields(problem)), problem
    if status == 415:
        assert "application/cloudevents+json" in problem["detail"] or "charset" in problem["detail"]
    assert await stored_events(server) == []


async def test_a_lying_content_length_is_refused_before_the_body_arrives(server: EventBusServer, http_url: str) -> None:
    host, port = http_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /events HTTP/1.1\r\nHost: test\r\nContent-Type: application/cloudevents+json\r\n"
            + f"Content-Length: {MAX_REQUEST_BYTES + 1}\r\n\r\n".encode()
            + json.dumps(EVENT).encode()  # far fewer bytes than declared: the server must not wait for the rest
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert status_line.split()[1] == b"413"
    assert b"application/problem+json" in head.lower()
    assert await stored_events(server) == []


async def test_a_chunked_body_over_the_limit_is_refused_while_reading(server: EventBusServer, http_url: str) -> None:
    chunk = b" " * (1024 * 1024)

    async def body() -> AsyncIterator[bytes]:
        yield b"["
        for _ in range(MAX_REQUEST_BYTES // len(chunk) + 1):
            yield chunk
        yield b"]"

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{http_url}/events", data=body(), headers=BATCH) as response,
    ):
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert response.status == 413
        problem = await response.json(content_type=None)
    assert fields(problem) == ["body"]
    assert await stored_events(server) == []


async def test_a_body_just_under_the_limit_is_read(server: EventBusServer, http_url: str) -> None:
    padding = MAX_REQUEST_BYTES - 200
    body = b"[" + json.dumps(EVENT).encode() + b" " * padding + b"]"
    assert len(body) <= MAX_REQUEST_BYTES
    status, answer = await post(http_url, body, BATCH)
    assert status == 202, answer
    assert len(await stored_events(server)) == 1


async def test_publish_answers_503_when_the_store_cannot_commit(server: EventBusServer, http_url: str) -> None:
    await server.store.close()
    status, problem = await post(http_url, doc(EVENT), STRUCTURED)
    assert status == 503, problem


API_KEY = "ebk_http_secretsecretsecret"


class TestWithAnApiKey:
    @pytest.fixture
    def server_settings(self, server_settings: ServerSettings) -> ServerSettings:
        return dataclasses.replace(server_settings, api_key=API_KEY)

    @pytest.mark.parametrize("authorization", [None, "Bearer ebk_http_wrong", f"Basic {API_KEY}"])
    async def test_without_the_right_key_it_is_401_and_nothing_stored(
        self, server: EventBusServer, http_url: str, authorization: str | None
    ) -> None:
        headers = {**STRUCTURED, **({"Authorization": authorization} if authorization else {})}
        status, problem = await post(http_url, doc(EVENT), headers)
        assert status == 401, problem
        assert problem["title"] == "Unauthenticated"
        assert await stored_events(server) == []

    async def test_with_the_key_it_is_accepted(self, server: EventBusServer, http_url: str) -> None:
        status, answer = await post(http_url, doc(EVENT), {**STRUCTURED, "Authorization": f"Bearer {API_KEY}"})
        assert status == 202, answer
        assert len(await stored_events(server)) == 1

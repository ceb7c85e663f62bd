"""The rdstation connector's test rig: a source with its URL token, requests as RD Station sends them, results."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from eventbus_rdstation.connector import RDStationConnector
from fixtures_inbound import encode

from eventbus.model import Event
from eventbus.plugin import Accepted, Headers, InboundRequest, Refused, SourceConfig

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TOKEN = "Zq3-rd_station.token~0123456789abcdef"
OLD_TOKEN = "the-token-before-the-rotation"
SOURCE = SourceConfig("rd-leads", "rdstation", secrets=(TOKEN,))
BRT = timezone(timedelta(hours=-3))
UUID = "c2f3d2b3-7250-4d27-97f4-eef38be32f7f"


def digest(*parts: str) -> str:
    return "rdstation-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def request(
    body: bytes | dict[str, Any] | list[Any],
    *,
    token: str | None = TOKEN,
    content_type: str | None = "application/json",
) -> InboundRequest:
    raw = body if isinstance(body, bytes) else encode(body)
    headers = {"User-Agent": "RDStation"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    query = (("token", token),) if token is not None else ()
    return InboundRequest("POST", "/hooks/rd-leads", query=query, headers=Headers.of(headers), body=raw)


async def handle(req: InboundRequest, source: SourceConfig = SOURCE) -> Accepted | Refused:
    result = await RDStationConnector().handle(req, source, NOW)
    assert isinstance(result, Accepted | Refused)
    return result


async def accepted(req: InboundRequest, source: SourceConfig = SOURCE) -> Accepted:
    result = await handle(req, source)
    assert isinstance(result, Accepted), result
    return result


async def one_event(req: InboundRequest) -> Event:
    result = await accepted(req)
    assert len(result.events) == 1
    return result.events[0]


async def refused(req: InboundRequest, status: int, field: str) -> Refused:
    result = await handle(req)
    assert isinstance(result, Refused), result
    assert (result.status, result.field) == (status, field), result
    return result

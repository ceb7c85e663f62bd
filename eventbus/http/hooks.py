"""`POST /hooks/{source}`: a provider's webhook, verified and parsed by the source's connector, stored as events."""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from aiohttp import web

from eventbus.bus.dispatch import TokenBucket
from eventbus.bus.service import Bus
from eventbus.errors import FieldViolation, NotFoundError, PermissionDeniedError, UnavailableError
from eventbus.http.events import read_body
from eventbus.http.problems import problem_response
from eventbus.plugin.connectors import Accepted, CustomResponse, Headers, InboundRequest, Refused, SourceConfig
from eventbus.plugin.manager import PluginFailure, Plugins
from eventbus.store.sources import IngestOutcome, RawRequest, Source, SourceStore

log = structlog.get_logger("eventbus.hooks")
DEFAULT_BODY_LIMIT = 1024 * 1024
SOURCE_CACHE_SECONDS = 1.0
SOURCE_CACHE_SIZE = 10_000
REDACTED = "[redacted]"
# Headers and query parameters whose values are credentials: never stored or logged in clear.
_SECRET_NAME = re.compile(
    r"authorization|cookie|signature|hmac|token|secret|password|api[-_]?key|x-hub-signature", re.IGNORECASE
)


@dataclass
class HookContext:
    """What the hook route needs, kept on the application."""

    bus: Bus
    store: SourceStore
    plugins: Plugins
    body_limit: int = DEFAULT_BODY_LIMIT
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    # Sources by name, read at most once a second per name instead of once per request; changes made through
    # this process's service layer drop the entry at once (`forget`).
    cache: dict[str, tuple[float, Source | None]] = field(default_factory=dict)

    async def find_source(self, name: str) -> Source | None:
        now = time.monotonic()
        cached = self.cache.get(name)
        if cached is not None and now - cached[0] < SOURCE_CACHE_SECONDS:
            return cached[1]
        found = await self.store.find_source(name)
        if len(self.cache) >= SOURCE_CACHE_SIZE:
            self.cache.clear()  # unknown names must not grow it without bound
        self.cache[name] = (now, found)
        return found

    def forget(self, name: str | None = None) -> None:
        if name is None:
            self.cache.clear()
        else:
            self.cache.pop(name, None)

    def admit(self, source: Source, now: datetime) -> float | None:
        """None when the source's ingress rate limit lets this request in, else the seconds to wait."""
        if not source.rate_limit:
            self.buckets.pop(source.id, None)
            return None
        bucket = self.buckets.get(source.id)
        if bucket is None or bucket.rate != source.rate_limit:
            bucket = self.buckets[source.id] = TokenBucket(source.rate_limit, now)
        if bucket.available(now) >= 1:
            bucket.take(1)
            return None
        return (bucket.next_token_at(now) - now).total_seconds()


HOOKS = web.AppKey("hooks", HookContext)


def add_routes(app: web.Application, context: HookContext) -> None:
    app[HOOKS] = context
    app.router.add_post("/hooks/{source}", receive_hook)


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def redact(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple((name, REDACTED if _is_secret_name(name) else value) for name, value in pairs)


def _answer(outcomes: list[IngestOutcome], replayed: bool) -> web.Response:
    body = {
        "events": [
            {"event_id": o.event_id, "id": o.id, "source": o.source, "seq": o.seq, "duplicate": o.duplicate}
            for o in outcomes
        ]
    }
    duplicate = replayed or all(o.duplicate for o in outcomes)
    return web.json_response(body, status=200 if duplicate else 202)


async def receive_hook(request: web.Request) -> web.StreamResponse:
    """Verify before anything is stored; 202 only after the durable commit; a redelivery gets 200 and the same body."""
    context = request.app[HOOKS]
    name = request.match_info["source"]
    source = await context.find_source(name)
    if source is None:
        raise NotFoundError(f"no source is named {name!r}")
    if not source.enabled:
        raise PermissionDeniedError(f"source {name!r} is disabled")
    now = context.bus.clock.now()
    wait = context.admit(source, now)
    if wait is not None:
        response = problem_response(429, "Too many requests", f"source {name!r} takes {source.rate_limit:g}/s")
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response
    body = await read_body(request, context.body_limit)
    connector = context.plugins.connectors().get(source.connector)
    if connector is None:
        raise UnavailableError(f"connector {source.connector!r} of source {name!r} is not installed on this server")
    headers = tuple((k, v) for k, v in request.headers.items())
    query = tuple((k, v) for k, v in request.query.items())
    inbound = InboundRequest(request.method, request.path, query, Headers(headers), body, request.remote)
    config = SourceConfig(source.name, source.connector, source.active_secrets(now), source.options)
    result = await context.plugins.call_connector(connector, inbound, config, now)
    if isinstance(result, PluginFailure):
        return problem_response(500, "Connector failed", f"connector {source.connector!r} failed; it is logged")
    if isinstance(result, Refused):
        log.info("hook_refused", source=name, status=result.status, reason=result.reason)
        violations = [FieldViolation(result.field, result.reason)] if result.field else None
        return problem_response(
            result.status, _TITLES.get(result.status, "Refused"), result.reason, violations=violations
        )
    if isinstance(result, CustomResponse):
        return web.Response(status=result.status, headers=dict(result.headers), body=result.body)
    assert isinstance(result, Accepted)
    raw = RawRequest(
        source_id=source.id,
        method=request.method,
        path=request.path,
        query=redact(query),
        headers=redact(headers),
        body=body,
        remote=request.remote,
        dedup_key=result.dedup_key,
    )
    outcomes, replayed = await context.store.ingest(
        list(result.events), raw, now=now, dedup_window=context.bus.settings.dedup_window
    )
    return _answer(outcomes, replayed)


_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 409: "Conflict", 413: "Payload too large"}

"""`POST /hooks/{source}`: a provider's webhook, verified and parsed by the source's connector, stored as events."""

from __future__ import annotations

import asyncio
import functools
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from aiohttp import web

from eventbus import tracing
from eventbus.bus.ratelimit import TokenBucket
from eventbus.bus.service import MAX_BATCH, MAX_BATCH_BYTES, Bus
from eventbus.errors import FieldViolation, NotFoundError, PermissionDeniedError, RequestTimeoutError, UnavailableError
from eventbus.http.events import read_body
from eventbus.http.problems import problem_response
from eventbus.logs import bind_event_ids
from eventbus.plugin.connectors import Accepted, CustomResponse, Headers, InboundRequest, Refused, SourceConfig
from eventbus.plugin.manager import PluginFailure, Plugins
from eventbus.store.sources import IngestOutcome, RawRequest, Source, SourceStore

log = structlog.get_logger("eventbus.hooks")
DEFAULT_BODY_LIMIT = 1024 * 1024
DEFAULT_READ_TIMEOUT = 30.0  # seconds for the whole body
MAX_BODIES_READING = 512
SOURCE_CACHE_SECONDS = 1.0
SOURCE_CACHE_SIZE = 10_000
REDACTED = "[redacted]"
# Headers and query parameters whose values are credentials: never stored or logged in clear.
_SECRET_NAME = re.compile(
    r"auth|cookie|sig|hmac|token|secret|password|passwd|key|hash|credential|session|code", re.IGNORECASE
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

    generation: int = 0  # bumped by every `forget`: a read that raced a change is not cached
    read_timeout: float = DEFAULT_READ_TIMEOUT
    reading: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_BODIES_READING))

    async def find_source(self, name: str) -> Source | None:
        now = time.monotonic()
        cached = self.cache.get(name)
        if cached is not None and now - cached[0] < SOURCE_CACHE_SECONDS:
            return cached[1]
        generation = self.generation
        found = await self.store.find_source(name)
        if generation == self.generation:
            if len(self.cache) >= SOURCE_CACHE_SIZE:
                self.cache.clear()  # unknown names must not grow it without bound
            self.cache[name] = (now, found)
        return found

    def forget(self, name: str | None = None) -> None:
        self.generation += 1
        if name is None:
            self.cache.clear()
        else:
            self.cache.pop(name, None)

    async def read_body(self, request: web.Request) -> bytes:
        """The body within the size limit and the read deadline; a sender that trickles or stalls is cut off
        (408), and at most `MAX_BODIES_READING` bodies are read at once (503 beyond: the sender retries)."""
        if self.reading.locked():
            raise UnavailableError("too many requests are being read; retry shortly")
        async with self.reading:
            try:
                async with asyncio.timeout(self.read_timeout):
                    return await read_body(request, self.body_limit)
            except TimeoutError:
                raise RequestTimeoutError(f"the body did not arrive within {self.read_timeout:g} s") from None

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


def redact(pairs: tuple[tuple[str, str], ...], also: frozenset[str] = frozenset()) -> tuple[tuple[str, str], ...]:
    """Header values that are credentials by their name, or by the connector's word (`also`), replaced."""
    return tuple((name, REDACTED if _is_secret_name(name) or name.lower() in also else value) for name, value in pairs)


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
    connector = context.plugins.connectors().get(source.connector)
    if connector is None:
        raise UnavailableError(f"connector {source.connector!r} of source {name!r} is not installed on this server")
    body = await context.read_body(request)
    now = context.bus.clock.now()
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
        try:
            return web.Response(status=result.status, headers=dict(result.headers), body=result.body)
        except Exception as exc:  # a header aiohttp cannot send, a body where none may be: the plugin's fault
            context.plugins.record_failure(context.plugins.connectors().owner(connector.name), "response", exc)
            return problem_response(500, "Connector failed", f"connector {source.connector!r} failed; it is logged")
    assert isinstance(result, Accepted)
    problem = _check_accepted(result)
    if problem is not None:
        context.plugins.record_failure(context.plugins.connectors().owner(connector.name), "handle", problem)
        return problem_response(500, "Connector failed", f"connector {source.connector!r} failed; it is logged")
    # The ingress rate limit counts verified requests only: unsigned junk cannot spend a provider's budget.
    wait = context.admit(source, now)
    if wait is not None:
        response = problem_response(429, "Too many requests", f"source {name!r} takes {source.rate_limit:g}/s")
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response
    # Registered JSON Schemas hold for provider events too: a refused webhook (422) leaves nothing stored.
    await context.bus.schemas.check(result.events)
    secret_headers = _declared_secret_headers(connector, source)
    raw = RawRequest(
        source_id=source.id,
        method=request.method,
        path=request.path,
        query=tuple((key, REDACTED) for key, _ in query),  # URL tokens live here: no query value is kept
        headers=redact(headers, secret_headers),
        body=body,
        remote=request.remote,
        dedup_key=result.dedup_key,
    )
    outcomes, replayed = await tracing.publish(
        list(result.events),
        lambda events: context.store.ingest(events, raw, now=now, dedup_window=context.bus.settings.dedup_window),
    )
    bind_event_ids(o.event_id for o in outcomes)
    if replayed:  # the stored answer's events, not these: the connector may parse the redelivery differently now
        context.bus.metrics.replayed("hooks", len(outcomes))
    else:
        context.bus.metrics.ingested(result.events, [o.duplicate for o in outcomes])
    return _answer(outcomes, replayed)


def _check_accepted(result: Accepted) -> ValueError | None:
    """What a connector returned, held to the limits of a publish: at most 1000 events, 16 MiB, a sane key."""
    if len(result.events) > MAX_BATCH:
        return ValueError(f"{len(result.events)} events from one request; at most {MAX_BATCH}")
    size = sum(event.size() for event in result.events)
    if size > MAX_BATCH_BYTES:
        return ValueError(f"{size} bytes of events from one request; at most {MAX_BATCH_BYTES}")
    key = result.dedup_key
    if key is not None and (not key or len(key) > 512 or not key.isprintable() or not _encodable(key)):
        return ValueError("dedup_key must be 1-512 printable characters")
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _declared_secret_headers(connector: object, source: Source) -> frozenset[str]:
    """Header names the connector says hold credentials for this source (e.g. the hmac connector's `header`)."""
    declare = getattr(connector, "secret_headers", None)
    if declare is None:
        return frozenset()
    try:
        return frozenset(str(name).lower() for name in declare(source.options))
    except Exception:  # redaction must not fail the request: the name rule still applies
        return frozenset()


_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 409: "Conflict", 413: "Payload too large"}

"""The bus service: the one `publish` every entry point ends in, event reads, and the background upkeep."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from eventbus.bus.schemas import SchemaCache
from eventbus.clock import Clock, SystemClock
from eventbus.errors import (
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
)
from eventbus.metrics.registry import Metrics
from eventbus.model import Event, PublishResult, StoredEvent
from eventbus.patterns import PatternSet
from eventbus.store.base import DEFAULT_MAX_PENDING_AGE, DEFAULT_RETRY_SCHEDULE, EventQuery, Store
from eventbus.store.idempotency import IDEMPOTENCY_KEEP_FOR, IdempotencyStore
from eventbus.store.sources import SourceStore, StoredRequest
from eventbus.store.space import SpaceReclaimer
from eventbus.store.types import EventTypeStore

if TYPE_CHECKING:
    from eventbus.bus.session import GroupSession

log = structlog.get_logger("eventbus.bus")

MAX_BATCH = 1000
SYSTEM_SOURCE_ROOT = "/eventbus"
RESERVED_SOURCES = ("/hooks/", "/eventbus/")
MAX_BATCH_BYTES = 16 * 1024 * 1024
GROUP_KIND = "grpc"


@dataclass(frozen=True, slots=True)
class BusSettings:
    """Tunables of the bus (the operations issue exposes them in the config file)."""

    dedup_window: timedelta = timedelta(hours=24)
    retention: timedelta = timedelta(days=7)
    retry_schedule: tuple[timedelta, ...] = DEFAULT_RETRY_SCHEDULE
    max_pending_age: timedelta = DEFAULT_MAX_PENDING_AGE
    default_ack_deadline: timedelta = timedelta(seconds=30)
    max_ack_deadline: timedelta = timedelta(hours=12)
    default_max_in_flight: int = 100
    max_in_flight_limit: int = 10_000
    group_idle_expiry: timedelta = timedelta(days=7)
    ephemeral_idle_expiry: timedelta = timedelta(minutes=2)
    heartbeat_every: timedelta = timedelta(seconds=30)
    janitor_every: float = 30.0  # seconds of real time between upkeep rounds
    backfill_chunk: int = 1000
    prune_chunk: int = 5000
    reclaim_pages: int = 65536  # most free pages (4 KiB each) an upkeep round gives back to the file system
    lease_batch: int = 256  # most deliveries leased (and sent on the wire) at once
    poll_every: timedelta = field(default=timedelta(seconds=1))  # wake-ups are hints; this is the safety net


@dataclass(frozen=True, slots=True)
class EventDetail:
    """An event and the raw inbound request it came from: None for one that did not come through `/hooks/{source}`
    (published, or the bus's own), and once retention pruned the request. Redacted when it was stored."""

    event: StoredEvent
    raw_request: StoredRequest | None


class Bus:
    """Publish and read events; owns the background tasks (backfills, expiry, retention)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        settings: BusSettings | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.settings = settings or BusSettings()
        # Compiled JSON Schemas of event types, checked on every publish but the bus's own (system events).
        self.schemas = SchemaCache(store if isinstance(store, EventTypeStore) else None)
        # This server's Prometheus registry (eventbus/http/metrics.py serves it), its label caps set before the
        # dispatcher labels anything.
        self.metrics = metrics or Metrics()
        self.sessions: set[GroupSession] = set()  # open streams of this process
        self.active_streams: dict[str, int] = {}  # subscription id → streams of this process joined to it
        self._backfill_kick = asyncio.Event()
        self.shutting_down = asyncio.Event()  # set first on SIGTERM: streams stop taking new deliveries
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run_backfills(), name="eventbus-backfill"),
            asyncio.create_task(self._run_janitor(), name="eventbus-janitor"),
        ]
        self._backfill_kick.set()

    async def close_sessions(self) -> None:
        """Give back every stream's leases (after the transports stopped, before the store closes)."""
        await asyncio.gather(*(session.close() for session in list(self.sessions)), return_exceptions=True)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # -- publish -------------------------------------------------------------------------------------------

    async def publish(
        self, events: Sequence[Event], *, not_before: datetime | None = None, internal: bool = False
    ) -> list[PublishResult]:
        """Store 1..1000 validated events atomically, fanned out; answers after the durable commit.

        Sources under `/hooks/` (verified provider webhooks) and `/eventbus` (system events) are reserved: only
        the gateway and the bus itself (`internal`) write them, so a publisher can neither forge a provider's
        event nor claim a provider's delivery id ahead of the provider.

        An event whose type has a registered JSON Schema must validate against it (`SchemaValidationError` naming
        `events[i].data`, and nothing of the batch is stored); the bus's own events (`internal`) are not checked.
        """
        if not events:
            raise InvalidArgumentError.for_field("events", "at least one event is required")
        started = time.perf_counter()
        if not internal:
            for index, event in enumerate(events):
                if event.source.startswith(RESERVED_SOURCES) or event.source == SYSTEM_SOURCE_ROOT:
                    raise PermissionDeniedError(
                        f"source {event.source!r} is reserved: /hooks/... events come only from verified webhooks, "
                        "/eventbus events only from the bus",
                        violations=[FieldViolation(f"events[{index}].source", "a reserved source")],
                    )
        if len(events) > MAX_BATCH:
            raise InvalidArgumentError.for_field("events", f"{len(events)} events; at most {MAX_BATCH} per call")
        total = sum(event.size() for event in events)
        if total > MAX_BATCH_BYTES:
            raise PayloadTooLargeError.for_field("events", f"batch is {total} bytes; at most {MAX_BATCH_BYTES}")
        if not_before is not None and not_before.tzinfo is None:
            raise InvalidArgumentError.for_field("not_before", "must be timezone-aware")
        if not internal:
            await self.schemas.check(events)
        outcomes = await self.store.append(
            events, now=self.clock.now(), not_before=not_before, dedup_window=self.settings.dedup_window
        )
        self.metrics.published(events, [o.duplicate for o in outcomes], time.perf_counter() - started)
        return [
            PublishResult(id=e.id, source=e.source, event_id=o.event_id, seq=o.seq, duplicate=o.duplicate)
            for e, o in zip(events, outcomes, strict=True)
        ]

    # -- read ----------------------------------------------------------------------------------------------

    async def get_event(
        self, *, event_id: str | None = None, source: str | None = None, id: str | None = None
    ) -> StoredEvent:
        if event_id:
            found = await self.store.get_event(event_id)
            if found is None:
                raise NotFoundError(f"event {event_id} does not exist")
            return found
        if source and id:
            found = await self.store.find_event(source, id)
            if found is None:
                raise NotFoundError(f"no event with source {source!r} and id {id!r}")
            return found
        if source or id:
            missing = "source_id.id" if source else "source_id.source"
            raise InvalidArgumentError.for_field(missing, "give both source and id")
        raise InvalidArgumentError.for_field("event_id", "give an event_id, or both source and id")

    async def get_event_detail(
        self, *, event_id: str | None = None, source: str | None = None, id: str | None = None
    ) -> EventDetail:
        """One event with its raw inbound request: REST `GET /v1/events/{id}` and gRPC `Admin.GetEvent` both read
        it here, so the two show the same thing. A store that keeps no sources has no raw requests to show."""
        stored = await self.get_event(event_id=event_id, source=source, id=id)
        request = await self.store.find_request(stored.seq) if isinstance(self.store, SourceStore) else None
        return EventDetail(stored, request)

    async def list_events(
        self,
        *,
        page_size: int = 100,
        page_token: str = "",
        patterns: Sequence[str] = (),
        source: str | None = None,
        subject: str | None = None,
        received_after: datetime | None = None,
        received_before: datetime | None = None,
    ) -> tuple[list[StoredEvent], str]:
        """A page of the log in seq order and the token of the next page ("" when this is the last).

        Pattern matching happens here, over a bounded scan (10 pages' worth of rows): a page may come back
        short, or empty with a token, when few events match; keep paging until the token is empty.
        """
        if page_size < 0 or page_size > 1000:
            raise InvalidArgumentError.for_field("page_size", "must be between 1 and 1000 (0 means 100)")
        size = page_size or 100
        after = decode_page_token(page_token)
        pattern_set = PatternSet.parse(list(patterns)) if patterns else None
        if received_after and received_before and received_before <= received_after:
            raise InvalidArgumentError.for_field("received_before", "must be after received_after")
        scan = size * 10 if pattern_set else size
        rows = await self.store.list_events(
            EventQuery(
                after_seq=after,
                limit=scan,
                source=source or None,
                subject=subject or None,
                received_after=received_after,
                received_before=received_before,
            )
        )
        page: list[StoredEvent] = []
        last_seen = after
        for stored in rows:
            last_seen = stored.seq
            if pattern_set is None or pattern_set.matches(stored.event.type):
                page.append(stored)
                if len(page) == size:
                    break
        if len(page) == size:
            exhausted = len(rows) < scan and last_seen == rows[-1].seq
        else:
            exhausted = len(rows) < scan
        next_token = "" if exhausted else encode_page_token(last_seen)
        return page, next_token

    # -- background ----------------------------------------------------------------------------------------

    def kick_backfills(self) -> None:
        self._backfill_kick.set()

    async def _run_backfills(self) -> None:
        while True:
            await self._backfill_kick.wait()
            self._backfill_kick.clear()
            try:
                for subscription_id in await self.store.pending_backfills():
                    while await self.store.backfill(
                        subscription_id, now=self.clock.now(), limit=self.settings.backfill_chunk
                    ):
                        await asyncio.sleep(0)  # let publishes share the writer between chunks
            except Exception as exc:
                log.error("backfill_failed", error=str(exc))
                await asyncio.sleep(1.0)
                self._backfill_kick.set()

    async def run_upkeep(self) -> None:
        """One round: heartbeat live groups, expire idle ones, purge deleted rows, prune past retention; and look
        for unfinished backfills (another process that started one may have died: a group's live events wait
        behind its backlog)."""
        self.kick_backfills()
        now = self.clock.now()
        await self.store.touch_subscriptions([s for s, n in self.active_streams.items() if n > 0], now=now)
        idle = await self.store.idle_subscriptions(
            GROUP_KIND,
            ephemeral_before=now - self.settings.ephemeral_idle_expiry,
            durable_before=now - self.settings.group_idle_expiry,
        )
        for subscription_id in idle:
            if self.active_streams.get(subscription_id, 0) == 0:
                # Re-checked inside the delete, so a join that just touched the group keeps it (the smaller
                # of the two thresholds is enough for that and never keeps a group past its own).
                shortest = min(self.settings.ephemeral_idle_expiry, self.settings.group_idle_expiry)
                expired = await self.store.delete_subscription(subscription_id, now=now, idle_before=now - shortest)
                if expired:
                    log.info("group_expired", subscription_id=subscription_id)
        while await self.store.purge_deleted(limit=self.settings.prune_chunk) >= self.settings.prune_chunk:
            await asyncio.sleep(0)
        older_than = now - self.settings.retention
        while await self.store.prune(older_than=older_than, limit=self.settings.prune_chunk) > 0:
            await asyncio.sleep(0)
        if isinstance(self.store, SourceStore):  # raw inbound requests follow their events out
            while await self.store.prune_requests(older_than=older_than, limit=self.settings.prune_chunk) > 0:
                await asyncio.sleep(0)
        if isinstance(self.store, EventTypeStore):  # types not seen for the retention window, unless registered
            while await self.store.prune_event_types(older_than=older_than, limit=self.settings.prune_chunk) > 0:
                await asyncio.sleep(0)
        if isinstance(self.store, IdempotencyStore):  # Idempotency-Key answers live 24 h, not `retention`
            answered_before = now - IDEMPOTENCY_KEEP_FOR
            chunk = self.settings.prune_chunk
            while await self.store.prune_idempotency_keys(older_than=answered_before, limit=chunk) > 0:
                await asyncio.sleep(0)
        if isinstance(self.store, SpaceReclaimer):  # SQLite: what was pruned goes back to the file system
            await self.store.reclaim_space(max_pages=self.settings.reclaim_pages)

    async def _run_janitor(self) -> None:
        while True:
            try:
                await self.run_upkeep()
            except Exception as exc:
                log.error("upkeep_failed", error=str(exc))
            await asyncio.sleep(self.settings.janitor_every)


def encode_page_token(after_seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{after_seq}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind != "seq" or not value.isascii() or not value.isdigit() or int(value) >= 2**63:
            raise ValueError(text)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgumentError.for_field("page_token", "not a token this server issued") from exc

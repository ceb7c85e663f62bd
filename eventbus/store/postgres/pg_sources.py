"""Inbound sources and raw requests in the PostgreSQL store (mixed into `PostgresStore`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from eventbus.clock import to_micros
from eventbus.errors import AlreadyExistsError, ConcurrentUpdateError, NotFoundError
from eventbus.ids import new_id
from eventbus.model import Event
from eventbus.store.admin_rows import (
    REQUEST_COLUMNS,
    SOURCE_COLUMNS,
    UPDATABLE_SOURCE_FIELDS,
    outcomes_from_text,
    request_from_row,
    request_values,
    secrets_to_text,
    source_column_value,
    source_from_row,
)
from eventbus.store.postgres.access import PgAccess
from eventbus.store.postgres.pg_events import append_in
from eventbus.store.sources import IngestOutcome, RawRequest, Source, SourceSpec, StoredRequest

# pg_advisory_xact_lock(DEDUP_LOCK, hash of source and dedup key): two processes receiving the same provider
# delivery at once answer one after the other, the second with the first's answer.
DEDUP_LOCK = 0x65766464  # "evdd"; the two-key lock space never meets the one-key locks of access.py


class SourceOperations(PgAccess):
    """Mixed into `PostgresStore`, which provides the pool (`_tx`, `_read`)."""

    async def create_source(self, spec: SourceSpec, *, now: datetime) -> Source:
        taken = f"a source named {spec.name!r} exists"
        stamp = to_micros(now)
        try:
            async with self._tx() as conn:
                if await conn.fetchrow("SELECT 1 FROM sources WHERE name = $1 AND deleted = 0", spec.name):
                    raise AlreadyExistsError(taken)
                row = await conn.fetchrow(
                    f"INSERT INTO sources ({SOURCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                    f"RETURNING {SOURCE_COLUMNS}",
                    new_id("src"),
                    spec.name,
                    spec.connector,
                    secrets_to_text(spec.secrets),
                    source_column_value("options", spec.options),
                    int(spec.enabled),
                    spec.rate_limit,
                    stamp,
                    stamp,
                )
        except asyncpg.UniqueViolationError as exc:  # another process created it since the check (sources_name)
            raise AlreadyExistsError(taken) from exc
        return source_from_row(row)

    async def get_source(self, source_id: str) -> Source | None:
        row = await self._read_one(f"SELECT {SOURCE_COLUMNS} FROM sources WHERE id = $1 AND deleted = 0", source_id)
        return source_from_row(row) if row else None

    async def find_source(self, name: str) -> Source | None:
        row = await self._read_one(f"SELECT {SOURCE_COLUMNS} FROM sources WHERE name = $1 AND deleted = 0", name)
        return source_from_row(row) if row else None

    async def list_sources(self, *, after_id: str, limit: int) -> list[Source]:
        rows = await self._read(
            f"SELECT {SOURCE_COLUMNS} FROM sources WHERE id > $1 AND deleted = 0 ORDER BY id LIMIT $2", after_id, limit
        )
        return [source_from_row(row) for row in rows]

    async def update_source(
        self, source_id: str, changes: dict[str, object], *, now: datetime, if_updated_at: datetime
    ) -> Source:
        unknown = set(changes) - UPDATABLE_SOURCE_FIELDS
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = {name: source_column_value(name, value) for name, value in changes.items()}
        assignments = "".join(f"{column} = ${number}, " for number, column in enumerate(values, start=1))
        after = len(values)
        async with self._tx() as conn:
            # FOR UPDATE: a concurrent update in another process waits here, then fails the compare below.
            current = await conn.fetchval(
                "SELECT updated_at FROM sources WHERE id = $1 AND deleted = 0 FOR UPDATE", source_id
            )
            if current is None:
                raise NotFoundError(f"source {source_id} does not exist")
            if current != to_micros(if_updated_at):
                raise ConcurrentUpdateError(f"source {source_id} changed meanwhile")
            row = await conn.fetchrow(
                f"UPDATE sources SET {assignments}updated_at = ${after + 1} WHERE id = ${after + 2} "
                f"RETURNING {SOURCE_COLUMNS}",
                *values.values(),
                max(to_micros(now), current + 1),
                source_id,
            )
        return source_from_row(row)

    async def delete_source(self, source_id: str, *, now: datetime) -> bool:
        async with self._tx() as conn:
            gone = await conn.fetchrow(
                "UPDATE sources SET deleted = 1, updated_at = $1 WHERE id = $2 AND deleted = 0 RETURNING id",
                to_micros(now),
                source_id,
            )
        return gone is not None

    async def ingest(
        self, events: Sequence[Event], request: RawRequest, *, now: datetime, dedup_window: timedelta
    ) -> tuple[list[IngestOutcome], bool]:
        async with self._tx() as conn:
            if request.dedup_key is not None:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1::integer, hashtext($2::text || ' ' || $3::text))",
                    DEDUP_LOCK,
                    request.source_id,
                    request.dedup_key,
                )
                answer = await conn.fetchval(
                    "SELECT answer FROM raw_requests WHERE source_id = $1 AND dedup_key = $2 AND received_at >= $3 "
                    "ORDER BY received_at DESC LIMIT 1",
                    request.source_id,
                    request.dedup_key,
                    to_micros(now - dedup_window),
                )
                if answer is not None:
                    return list(outcomes_from_text(answer)), True
            # The append comes last but for one small insert: it holds the append lock to the commit.
            appended, touched = await append_in(conn, events, now=now, not_before=None, window=dedup_window)
            outcomes = [
                IngestOutcome(e.id, e.source, o.event_id, o.seq, o.duplicate)
                for e, o in zip(events, appended, strict=True)
            ]
            new = [o.seq for o in outcomes if not o.duplicate]
            if new:  # a redelivery that brought nothing new keeps no second copy
                await conn.execute(
                    f"INSERT INTO raw_requests ({REQUEST_COLUMNS}, first_seq, last_seq) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    *request_values(new_id("req"), now, request, outcomes),
                    min(new),
                    max(new),
                )
            await self._announce(conn, touched)
        self.wakeups.notify(touched)
        return outcomes, False

    async def find_request(self, event_seq: int) -> StoredRequest | None:
        row = await self._read_one(
            f"SELECT {REQUEST_COLUMNS} FROM raw_requests WHERE first_seq <= $1 AND last_seq >= $1 "
            "ORDER BY first_seq DESC LIMIT 1",
            event_seq,
        )
        return request_from_row(row) if row else None

    async def prune_requests(self, *, older_than: datetime, limit: int) -> int:
        async with self._tx() as conn:
            removed = await conn.fetchval(
                "WITH gone AS (DELETE FROM raw_requests WHERE request_id IN (SELECT request_id FROM raw_requests "
                "WHERE received_at < $1 LIMIT $2) RETURNING 1) SELECT count(*) FROM gone",
                to_micros(older_than),
                limit,
            )
        return int(removed)

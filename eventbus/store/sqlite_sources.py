"""Inbound sources and raw requests in the SQLite store (mixed into `SQLiteStore`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from eventbus.clock import to_micros
from eventbus.errors import AlreadyExistsError, ConcurrentUpdateError, NotFoundError
from eventbus.ids import new_id
from eventbus.model import Event
from eventbus.store import sqlite_fanout as fanout
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
from eventbus.store.sources import IngestOutcome, RawRequest, Source, SourceSpec, StoredRequest
from eventbus.store.sqlite_access import StoreAccess


def _ingest(
    conn: sqlite3.Connection,
    cache: fanout.SubscriptionCache,
    events: Sequence[Event],
    request: RawRequest,
    now: datetime,
    window: timedelta,
) -> tuple[list[IngestOutcome], bool, set[str]]:
    if request.dedup_key is not None:
        row = conn.execute(
            "SELECT answer FROM raw_requests WHERE source_id = ? AND dedup_key = ? AND received_at >= ? "
            "ORDER BY received_at DESC LIMIT 1",
            (request.source_id, request.dedup_key, to_micros(now - window)),
        ).fetchone()
        if row is not None:
            return list(outcomes_from_text(row[0])), True, set()
    appended, touched = fanout.append(conn, cache, events, now=now, not_before=None, window=window)
    outcomes = [
        IngestOutcome(e.id, e.source, o.event_id, o.seq, o.duplicate) for e, o in zip(events, appended, strict=True)
    ]
    new = [o.seq for o in outcomes if not o.duplicate]
    if new:  # a redelivery that brought nothing new keeps no second copy
        conn.execute(
            f"INSERT INTO raw_requests ({REQUEST_COLUMNS}, first_seq, last_seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*request_values(new_id("req"), now, request, outcomes), min(new), max(new)),
        )
    return outcomes, False, touched


class SourceOperations(StoreAccess):
    """Mixed into `SQLiteStore`, which provides the connections (`_read`, `_write`) and the fan-out cache."""

    async def create_source(self, spec: SourceSpec, *, now: datetime) -> Source:
        def create(conn: sqlite3.Connection) -> Source:
            taken = conn.execute("SELECT 1 FROM sources WHERE name = ? AND deleted = 0", (spec.name,)).fetchone()
            if taken is not None:
                raise AlreadyExistsError(f"a source named {spec.name!r} exists")
            stamp = to_micros(now)
            source_id = new_id("src")
            conn.execute(
                f"INSERT INTO sources ({SOURCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    source_id,
                    spec.name,
                    spec.connector,
                    secrets_to_text(spec.secrets),
                    json.dumps(spec.options, sort_keys=True),
                    int(spec.enabled),
                    spec.rate_limit,
                    stamp,
                    stamp,
                ),
            )
            row = conn.execute(f"SELECT {SOURCE_COLUMNS} FROM sources WHERE id = ?", (source_id,)).fetchone()
            return source_from_row(row)

        return await self._write(create)

    async def get_source(self, source_id: str) -> Source | None:
        sql = f"SELECT {SOURCE_COLUMNS} FROM sources WHERE id = ? AND deleted = 0"
        row = await self._read(lambda c: c.execute(sql, (source_id,)).fetchone())
        return source_from_row(row) if row else None

    async def find_source(self, name: str) -> Source | None:
        sql = f"SELECT {SOURCE_COLUMNS} FROM sources WHERE name = ? AND deleted = 0"
        row = await self._read(lambda c: c.execute(sql, (name,)).fetchone())
        return source_from_row(row) if row else None

    async def list_sources(self, *, after_id: str, limit: int) -> list[Source]:
        sql = f"SELECT {SOURCE_COLUMNS} FROM sources WHERE id > ? AND deleted = 0 ORDER BY id LIMIT ?"
        rows = await self._read(lambda c: c.execute(sql, (after_id, limit)).fetchall())
        return [source_from_row(row) for row in rows]

    async def update_source(
        self, source_id: str, changes: dict[str, object], *, now: datetime, if_updated_at: datetime
    ) -> Source:
        unknown = set(changes) - UPDATABLE_SOURCE_FIELDS
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")

        def update(conn: sqlite3.Connection) -> Source:
            row = conn.execute("SELECT updated_at FROM sources WHERE id = ? AND deleted = 0", (source_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"source {source_id} does not exist")
            if row[0] != to_micros(if_updated_at):
                raise ConcurrentUpdateError(f"source {source_id} changed meanwhile")
            values = {name: source_column_value(name, value) for name, value in changes.items()}
            stamp = max(to_micros(now), row[0] + 1)
            assignments = "".join(f"{column} = ?, " for column in values)
            conn.execute(
                f"UPDATE sources SET {assignments}updated_at = ? WHERE id = ?", (*values.values(), stamp, source_id)
            )
            updated = conn.execute(f"SELECT {SOURCE_COLUMNS} FROM sources WHERE id = ?", (source_id,)).fetchone()
            return source_from_row(updated)

        return await self._write(update)

    async def delete_source(self, source_id: str, *, now: datetime) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE sources SET deleted = 1, updated_at = ? WHERE id = ? AND deleted = 0",
                (to_micros(now), source_id),
            )
            return cursor.rowcount == 1

        return await self._write(delete)

    async def ingest(
        self, events: Sequence[Event], request: RawRequest, *, now: datetime, dedup_window: timedelta
    ) -> tuple[list[IngestOutcome], bool]:
        outcomes, replayed, touched = await self._write(
            lambda conn: _ingest(conn, self._cache, events, request, now, dedup_window)
        )
        self.wakeups.notify(touched)
        return outcomes, replayed

    async def find_request(self, event_seq: int) -> StoredRequest | None:
        sql = (
            f"SELECT {REQUEST_COLUMNS} FROM raw_requests WHERE first_seq <= ? AND last_seq >= ? "
            "ORDER BY first_seq DESC LIMIT 1"
        )
        row = await self._read(lambda c: c.execute(sql, (event_seq, event_seq)).fetchone())
        return request_from_row(row) if row else None

    async def prune_requests(self, *, older_than: datetime, limit: int) -> int:
        sql = "DELETE FROM raw_requests WHERE rowid IN (SELECT rowid FROM raw_requests WHERE received_at < ? LIMIT ?)"
        return await self._write(lambda c: c.execute(sql, (to_micros(older_than), limit)).rowcount)

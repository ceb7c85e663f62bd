"""Event-type catalogue operations of the SQLite store (the counts are written by `sqlite_fanout.append`)."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from eventbus.clock import from_micros, to_micros
from eventbus.store.admin_rows import PAST_ASCII, TYPE_COLUMNS, event_type_from_row
from eventbus.store.sqlite_access import StoreAccess
from eventbus.store.types import EventTypeRecord, RegisteredSchema


class TypeOperations(StoreAccess):
    """Mixed into `SQLiteStore`, which provides the connections (`_read`, `_write`)."""

    async def list_event_types(self, *, after: str, limit: int, prefix: str = "") -> list[EventTypeRecord]:
        sql = f"SELECT {TYPE_COLUMNS} FROM event_types WHERE type > ? AND type >= ? AND type < ? ORDER BY type LIMIT ?"
        params = (after, prefix, prefix + PAST_ASCII, limit)
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [event_type_from_row(row) for row in rows]

    async def get_event_type(self, type: str) -> EventTypeRecord | None:
        sql = f"SELECT {TYPE_COLUMNS} FROM event_types WHERE type = ?"
        row = await self._read(lambda c: c.execute(sql, (type,)).fetchone())
        return event_type_from_row(row) if row else None

    async def set_event_schema(self, type: str, schema: str, *, now: datetime) -> EventTypeRecord:
        def register(conn: sqlite3.Connection) -> EventTypeRecord:
            conn.execute(
                "INSERT INTO event_types (type, schema, schema_updated_at) VALUES (?, ?, ?) ON CONFLICT (type) "
                "DO UPDATE SET schema = excluded.schema, schema_updated_at = excluded.schema_updated_at",
                (type, schema, to_micros(now)),
            )
            row = conn.execute(f"SELECT {TYPE_COLUMNS} FROM event_types WHERE type = ?", (type,)).fetchone()
            return event_type_from_row(row)

        return await self._write(register)

    async def delete_event_schema(self, type: str, *, now: datetime) -> bool:
        def unregister(conn: sqlite3.Connection) -> bool:
            # A type registered ahead of its events leaves no trace; a seen one keeps its counts.
            removed = conn.execute(
                "DELETE FROM event_types WHERE type = ? AND schema IS NOT NULL AND first_seen IS NULL", (type,)
            ).rowcount
            if removed:
                return True
            cursor = conn.execute(
                "UPDATE event_types SET schema = NULL, schema_updated_at = ? WHERE type = ? AND schema IS NOT NULL",
                (to_micros(now), type),
            )
            return cursor.rowcount == 1

        return await self._write(unregister)

    async def event_schemas(self) -> list[RegisteredSchema]:
        sql = "SELECT type, schema, schema_updated_at FROM event_types WHERE schema IS NOT NULL ORDER BY type"
        rows = await self._read(lambda c: c.execute(sql).fetchall())
        return [RegisteredSchema(type_, schema, from_micros(updated)) for type_, schema, updated in rows]

    async def prune_event_types(self, *, older_than: datetime, limit: int) -> int:
        sql = (
            "DELETE FROM event_types WHERE rowid IN (SELECT rowid FROM event_types WHERE schema IS NULL AND "
            "last_seen < ? LIMIT ?)"
        )
        return await self._write(lambda c: c.execute(sql, (to_micros(older_than), limit)).rowcount)

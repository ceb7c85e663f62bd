"""API-key operations of the SQLite store: create, read, revoke, and the coarse last-used stamps."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from eventbus.clock import to_micros
from eventbus.store.admin_rows import KEY_COLUMNS, key_from_row, key_values
from eventbus.store.keys import KeyRecord
from eventbus.store.sqlite_access import StoreAccess


class KeyOperations(StoreAccess):
    """Mixed into `SQLiteStore`, which provides the connections (`_read`, `_write`)."""

    async def create_key(self, record: KeyRecord) -> None:
        values = key_values(record)
        sql = f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        await self._write(lambda c: c.execute(sql, values))

    async def get_key(self, key_id: str) -> KeyRecord | None:
        sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?"
        row = await self._read(lambda c: c.execute(sql, (key_id,)).fetchone())
        return key_from_row(row) if row else None

    async def list_keys(self, *, include_revoked: bool, after_id: str, limit: int) -> list[KeyRecord]:
        active = "" if include_revoked else " AND revoked_at IS NULL"
        sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id > ?{active} ORDER BY key_id LIMIT ?"
        rows = await self._read(lambda c: c.execute(sql, (after_id, limit)).fetchall())
        return [key_from_row(row) for row in rows]

    async def active_keys(self) -> list[KeyRecord]:
        sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL ORDER BY key_id"
        rows = await self._read(lambda c: c.execute(sql).fetchall())
        return [key_from_row(row) for row in rows]

    async def revoke_key(self, key_id: str, *, now: datetime) -> KeyRecord | None:
        def revoke(conn: sqlite3.Connection) -> KeyRecord | None:
            conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?", (to_micros(now), key_id)
            )
            row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
            return key_from_row(row) if row else None

        return await self._write(revoke)

    async def touch_keys(self, key_ids: Sequence[str], *, now: datetime) -> None:
        if not key_ids:
            return
        stamp = to_micros(now)
        await self._write(
            lambda c: c.executemany(
                "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE key_id = ?",
                [(stamp, key_id) for key_id in key_ids],
            )
        )

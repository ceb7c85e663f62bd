"""API-key operations of the SQLite store: create, read, revoke, and the coarse last-used stamps."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eventbus.clock import from_micros, to_micros
from eventbus.store.keys import KeyRecord
from eventbus.store.sqlite_access import StoreAccess

KEY_COLUMNS = "key_id, name, digest, scopes, created_at, last_used_at, revoked_at"


def _record(row: Sequence[Any]) -> KeyRecord:
    key_id, name, digest, scopes, created_at, last_used_at, revoked_at = row
    return KeyRecord(
        key_id=key_id,
        name=name,
        digest=digest,
        scopes=tuple(s for s in scopes.split(",") if s),
        created_at=from_micros(created_at),
        last_used_at=from_micros(last_used_at) if last_used_at is not None else None,
        revoked_at=from_micros(revoked_at) if revoked_at is not None else None,
    )


class KeyOperations(StoreAccess):
    """Mixed into `SQLiteStore`, which provides the connections (`_read`, `_write`)."""

    async def create_key(self, record: KeyRecord) -> None:
        values = (
            record.key_id,
            record.name,
            record.digest,
            ",".join(record.scopes),
            to_micros(record.created_at),
            to_micros(record.last_used_at) if record.last_used_at else None,
            to_micros(record.revoked_at) if record.revoked_at else None,
        )
        sql = f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        await self._write(lambda c: c.execute(sql, values))

    async def get_key(self, key_id: str) -> KeyRecord | None:
        sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?"
        row = await self._read(lambda c: c.execute(sql, (key_id,)).fetchone())
        return _record(row) if row else None

    async def list_keys(self, *, include_revoked: bool, after_id: str, limit: int) -> list[KeyRecord]:
        active = "" if include_revoked else " AND revoked_at IS NULL"
        sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id > ?{active} ORDER BY key_id LIMIT ?"
        rows = await self._read(lambda c: c.execute(sql, (after_id, limit)).fetchall())
        return [_record(row) for row in rows]

    async def active_keys(self) -> list[KeyRecord]:
        sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL ORDER BY key_id"
        rows = await self._read(lambda c: c.execute(sql).fetchall())
        return [_record(row) for row in rows]

    async def revoke_key(self, key_id: str, *, now: datetime) -> KeyRecord | None:
        def revoke(conn: sqlite3.Connection) -> KeyRecord | None:
            conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?", (to_micros(now), key_id)
            )
            row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
            return _record(row) if row else None

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

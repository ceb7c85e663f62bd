"""Destination-state operations of the SQLite store: small per-subscription values with optional expiry."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from eventbus.clock import to_micros
from eventbus.store.sqlite_access import StoreAccess
from eventbus.store.state import MAX_KEYS


class StateOperations(StoreAccess):
    """Mixed into `SQLiteStore`, which provides the connections (`_read`, `_write`)."""

    async def state_get(self, subscription_id: str, key: str, *, now: datetime) -> str | None:
        sql = (
            "SELECT value FROM destination_state WHERE subscription_id = ? AND key = ? "
            "AND (expires_at IS NULL OR expires_at > ?)"
        )
        row = await self._read(lambda c: c.execute(sql, (subscription_id, key, to_micros(now))).fetchone())
        return str(row[0]) if row else None

    async def state_set(
        self, subscription_id: str, key: str, value: str, *, expires_at: datetime | None, now: datetime
    ) -> bool:
        stamp = to_micros(now)

        def put(conn: sqlite3.Connection) -> bool:
            # Expired values make room first; then a new key fits only under the cap.
            conn.execute(
                "DELETE FROM destination_state WHERE subscription_id = ? AND expires_at IS NOT NULL "
                "AND expires_at <= ?",
                (subscription_id, stamp),
            )
            exists = conn.execute(
                "SELECT 1 FROM destination_state WHERE subscription_id = ? AND key = ?", (subscription_id, key)
            ).fetchone()
            if exists is None:
                (count,) = conn.execute(
                    "SELECT COUNT(*) FROM destination_state WHERE subscription_id = ?", (subscription_id,)
                ).fetchone()
                if count >= MAX_KEYS:
                    return False
            conn.execute(
                "INSERT INTO destination_state (subscription_id, key, value, expires_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (subscription_id, key) DO UPDATE SET value = excluded.value, "
                "expires_at = excluded.expires_at, updated_at = excluded.updated_at",
                (subscription_id, key, value, to_micros(expires_at) if expires_at is not None else None, stamp),
            )
            return True

        return await self._write(put)

    async def state_delete(self, subscription_id: str, key: str) -> None:
        await self._write(
            lambda c: c.execute(
                "DELETE FROM destination_state WHERE subscription_id = ? AND key = ?", (subscription_id, key)
            )
        )

    async def state_use(self, scope: str, subscription_id: str) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO destination_scope_users (scope, subscription_id) VALUES (?, ?)",
                (scope, subscription_id),
            )
        )

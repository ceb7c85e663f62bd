"""Idempotency-key operations of the SQLite store."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from eventbus.clock import from_micros, to_micros
from eventbus.store.idempotency import StoredAnswer
from eventbus.store.sqlite_access import StoreAccess


class IdempotencyOperations(StoreAccess):
    """Mixed into `SQLiteStore`, which provides the connections (`_read`, `_write`)."""

    async def claim_idempotency_key(
        self,
        scope: str,
        key: str,
        body_sha256: str,
        *,
        now: datetime,
        expires_before: datetime,
        stale_before: datetime,
    ) -> StoredAnswer | None:
        def claim(conn: sqlite3.Connection) -> StoredAnswer | None:
            row = conn.execute(
                "SELECT body_sha256, status, content_type, body, created_at FROM idempotency_keys "
                "WHERE scope = ? AND key = ?",
                (scope, key),
            ).fetchone()
            stale = row is not None and row[1] is None and row[4] < to_micros(stale_before)
            if row is not None and row[4] >= to_micros(expires_before) and not stale:
                return StoredAnswer(
                    row[0], row[1], row[2], bytes(row[3]) if row[3] is not None else None, from_micros(row[4])
                )
            conn.execute(
                "INSERT OR REPLACE INTO idempotency_keys (scope, key, body_sha256, status, content_type, body, "
                "created_at) VALUES (?, ?, ?, NULL, NULL, NULL, ?)",
                (scope, key, body_sha256, to_micros(now)),
            )
            return None

        return await self._write(claim)

    async def answer_idempotency_key(
        self, scope: str, key: str, *, status: int, content_type: str, body: bytes
    ) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE idempotency_keys SET status = ?, content_type = ?, body = ? WHERE scope = ? AND key = ?",
                (status, content_type, body, scope, key),
            )
        )

    async def release_idempotency_key(self, scope: str, key: str) -> None:
        await self._write(
            lambda c: c.execute(
                "DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND status IS NULL", (scope, key)
            )
        )

    async def prune_idempotency_keys(self, *, older_than: datetime, limit: int) -> int:
        sql = (
            "DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM idempotency_keys WHERE created_at < ? "
            "LIMIT ?)"
        )
        return await self._write(lambda c: c.execute(sql, (to_micros(older_than), limit)).rowcount)

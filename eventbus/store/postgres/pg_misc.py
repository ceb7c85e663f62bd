"""API keys, destination state, idempotency keys and the event-type catalogue in the PostgreSQL store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from eventbus.clock import from_micros, to_micros
from eventbus.store.admin_rows import (
    KEY_COLUMNS,
    PAST_ASCII,
    TYPE_COLUMNS,
    event_type_from_row,
    key_from_row,
    key_values,
)
from eventbus.store.idempotency import StoredAnswer
from eventbus.store.keys import KeyRecord
from eventbus.store.postgres.access import PgAccess
from eventbus.store.state import MAX_KEYS
from eventbus.store.types import EventTypeRecord, RegisteredSchema

# pg_advisory_xact_lock(STATE_LOCK, hash of the subscription id): two processes adding keys to one subscription
# at once count one after the other, so the cap holds. The two-key lock space never meets access.py's locks.
STATE_LOCK = 0x65767374  # "evst"
# Types compare byte by byte, as in SQLite, whatever the database's collation: prefix ranges rely on it.
BYTES = 'COLLATE "C"'


class KeyOperations(PgAccess):
    """Mixed into `PostgresStore`, which provides the pool (`_tx`, `_read`)."""

    async def create_key(self, record: KeyRecord) -> None:
        async with self._tx() as conn:
            await conn.execute(
                f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)", *key_values(record)
            )

    async def get_key(self, key_id: str) -> KeyRecord | None:
        row = await self._read_one(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = $1", key_id)
        return key_from_row(row) if row else None

    async def list_keys(self, *, include_revoked: bool, after_id: str, limit: int) -> list[KeyRecord]:
        active = "" if include_revoked else " AND revoked_at IS NULL"
        rows = await self._read(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id > $1{active} ORDER BY key_id LIMIT $2", after_id, limit
        )
        return [key_from_row(row) for row in rows]

    async def active_keys(self) -> list[KeyRecord]:
        rows = await self._read(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL ORDER BY key_id")
        return [key_from_row(row) for row in rows]

    async def revoke_key(self, key_id: str, *, now: datetime) -> KeyRecord | None:
        async with self._tx() as conn:
            row = await conn.fetchrow(
                f"UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE key_id = $2 RETURNING {KEY_COLUMNS}",
                to_micros(now),
                key_id,
            )
        return key_from_row(row) if row else None

    async def touch_keys(self, key_ids: Sequence[str], *, now: datetime) -> None:
        if not key_ids:
            return
        async with self._tx() as conn:
            await conn.execute(
                "UPDATE api_keys SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $1) "
                "WHERE key_id = ANY($2::text[])",
                to_micros(now),
                list(key_ids),
            )


class StateOperations(PgAccess):
    """Mixed into `PostgresStore`, which provides the pool (`_tx`, `_read`)."""

    async def state_get(self, subscription_id: str, key: str, *, now: datetime) -> str | None:
        row = await self._read_one(
            "SELECT value FROM destination_state WHERE subscription_id = $1 AND key = $2 "
            "AND (expires_at IS NULL OR expires_at > $3)",
            subscription_id,
            key,
            to_micros(now),
        )
        return str(row[0]) if row else None

    async def state_set(
        self, subscription_id: str, key: str, value: str, *, expires_at: datetime | None, now: datetime
    ) -> bool:
        stamp = to_micros(now)
        async with self._tx() as conn:
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1::integer, hashtext($2::text))", STATE_LOCK, subscription_id
            )
            # Expired values make room first; then a new key fits only under the cap.
            await conn.execute(
                "DELETE FROM destination_state WHERE subscription_id = $1 AND expires_at IS NOT NULL "
                "AND expires_at <= $2",
                subscription_id,
                stamp,
            )
            exists = await conn.fetchrow(
                "SELECT 1 FROM destination_state WHERE subscription_id = $1 AND key = $2", subscription_id, key
            )
            if exists is None:
                count = await conn.fetchval(
                    "SELECT COUNT(*) FROM destination_state WHERE subscription_id = $1", subscription_id
                )
                if count >= MAX_KEYS:
                    return False
            await conn.execute(
                "INSERT INTO destination_state (subscription_id, key, value, expires_at, updated_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subscription_id, key) DO UPDATE SET value = excluded.value, "
                "expires_at = excluded.expires_at, updated_at = excluded.updated_at",
                subscription_id,
                key,
                value,
                to_micros(expires_at) if expires_at is not None else None,
                stamp,
            )
        return True

    async def state_delete(self, subscription_id: str, key: str) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "DELETE FROM destination_state WHERE subscription_id = $1 AND key = $2", subscription_id, key
            )

    async def state_use(self, scope: str, subscription_id: str) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO destination_scope_users (scope, subscription_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                scope,
                subscription_id,
            )


class IdempotencyOperations(PgAccess):
    """Mixed into `PostgresStore`, which provides the pool (`_tx`, `_read`)."""

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
        stamp = to_micros(now)
        async with self._tx() as conn:
            # The insert waits for another process's uncommitted claim of the key, then does nothing; the row it
            # left is read locked, so deciding to take it over and doing so is one step. A loop: the row may be
            # released (deleted) between the two statements.
            while True:
                claimed = await conn.fetchrow(
                    "INSERT INTO idempotency_keys (scope, key, body_sha256, status, content_type, body, created_at) "
                    "VALUES ($1, $2, $3, NULL, NULL, NULL, $4) ON CONFLICT (scope, key) DO NOTHING RETURNING 1",
                    scope,
                    key,
                    body_sha256,
                    stamp,
                )
                if claimed is not None:
                    return None
                row = await conn.fetchrow(
                    "SELECT body_sha256, status, content_type, body, created_at FROM idempotency_keys "
                    "WHERE scope = $1 AND key = $2 FOR UPDATE",
                    scope,
                    key,
                )
                if row is not None:
                    break
            digest, status, content_type, body, created_at = row
            stale = status is None and created_at < to_micros(stale_before)
            if created_at >= to_micros(expires_before) and not stale:
                return StoredAnswer(
                    digest, status, content_type, bytes(body) if body is not None else None, from_micros(created_at)
                )
            await conn.execute(
                "UPDATE idempotency_keys SET body_sha256 = $3, status = NULL, content_type = NULL, body = NULL, "
                "created_at = $4 WHERE scope = $1 AND key = $2",
                scope,
                key,
                body_sha256,
                stamp,
            )
        return None

    async def answer_idempotency_key(
        self, scope: str, key: str, *, status: int, content_type: str, body: bytes
    ) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET status = $1, content_type = $2, body = $3 WHERE scope = $4 AND key = $5",
                status,
                content_type,
                body,
                scope,
                key,
            )

    async def release_idempotency_key(self, scope: str, key: str) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL", scope, key
            )

    async def prune_idempotency_keys(self, *, older_than: datetime, limit: int) -> int:
        async with self._tx() as conn:
            removed = await conn.fetchval(
                "WITH gone AS (DELETE FROM idempotency_keys WHERE (scope, key) IN (SELECT scope, key "
                "FROM idempotency_keys WHERE created_at < $1 LIMIT $2) RETURNING 1) SELECT count(*) FROM gone",
                to_micros(older_than),
                limit,
            )
        return int(removed)


class TypeOperations(PgAccess):
    """Mixed into `PostgresStore`, which provides the pool (`_tx`, `_read`); the counts are written by the append."""

    async def list_event_types(self, *, after: str, limit: int, prefix: str = "") -> list[EventTypeRecord]:
        rows = await self._read(
            f"SELECT {TYPE_COLUMNS} FROM event_types WHERE type {BYTES} > $1 AND type {BYTES} >= $2 "
            f"AND type {BYTES} < $3 ORDER BY type {BYTES} LIMIT $4",
            after,
            prefix,
            prefix + PAST_ASCII,
            limit,
        )
        return [event_type_from_row(row) for row in rows]

    async def get_event_type(self, type: str) -> EventTypeRecord | None:
        row = await self._read_one(f"SELECT {TYPE_COLUMNS} FROM event_types WHERE type = $1", type)
        return event_type_from_row(row) if row else None

    async def set_event_schema(self, type: str, schema: str, *, now: datetime) -> EventTypeRecord:
        async with self._tx() as conn:
            row = await conn.fetchrow(
                "INSERT INTO event_types (type, schema, schema_updated_at) VALUES ($1, $2, $3) ON CONFLICT (type) "
                "DO UPDATE SET schema = excluded.schema, schema_updated_at = excluded.schema_updated_at "
                f"RETURNING {TYPE_COLUMNS}",
                type,
                schema,
                to_micros(now),
            )
        return event_type_from_row(row)

    async def delete_event_schema(self, type: str, *, now: datetime) -> bool:
        async with self._tx() as conn:
            # A type registered ahead of its events leaves no trace; a seen one keeps its counts.
            removed = await conn.fetchrow(
                "DELETE FROM event_types WHERE type = $1 AND schema IS NOT NULL AND first_seen IS NULL RETURNING 1",
                type,
            )
            if removed is not None:
                return True
            cleared = await conn.fetchrow(
                "UPDATE event_types SET schema = NULL, schema_updated_at = $1 WHERE type = $2 AND schema IS NOT NULL "
                "RETURNING 1",
                to_micros(now),
                type,
            )
        return cleared is not None

    async def event_schemas(self) -> list[RegisteredSchema]:
        rows = await self._read(
            f"SELECT type, schema, schema_updated_at FROM event_types WHERE schema IS NOT NULL ORDER BY type {BYTES}"
        )
        return [RegisteredSchema(type_, schema, from_micros(updated)) for type_, schema, updated in rows]

    async def prune_event_types(self, *, older_than: datetime, limit: int) -> int:
        async with self._tx() as conn:
            removed = await conn.fetchval(
                "WITH gone AS (DELETE FROM event_types WHERE type IN (SELECT type FROM event_types "
                "WHERE schema IS NULL AND last_seen < $1 LIMIT $2) RETURNING 1) SELECT count(*) FROM gone",
                to_micros(older_than),
                limit,
            )
        return int(removed)

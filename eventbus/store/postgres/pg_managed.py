"""The config file's markers in the PostgreSQL store (`managed_resources`)."""

from __future__ import annotations

from eventbus.clock import from_micros, to_micros
from eventbus.store.managed import ManagedRecord
from eventbus.store.postgres.access import PgAccess

_COLUMNS = "resource, name, resource_id, digest, updated_at"


class ManagedOperations(PgAccess):
    """Mixed into `PostgresStore`, which provides the pool (`_tx`, `_read`)."""

    async def list_managed(self) -> list[ManagedRecord]:
        rows = await self._read(f"SELECT {_COLUMNS} FROM managed_resources ORDER BY resource, name")
        return [ManagedRecord(r[0], r[1], r[2], r[3], from_micros(r[4])) for r in rows]

    async def find_managed(self, resource_id: str) -> ManagedRecord | None:
        row = await self._read_one(f"SELECT {_COLUMNS} FROM managed_resources WHERE resource_id = $1", resource_id)
        return ManagedRecord(row[0], row[1], row[2], row[3], from_micros(row[4])) if row else None

    async def put_managed(self, record: ManagedRecord) -> None:
        async with self._tx() as conn:
            await conn.execute(
                f"INSERT INTO managed_resources ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT (resource, name) DO UPDATE SET resource_id = EXCLUDED.resource_id, "
                "digest = EXCLUDED.digest, updated_at = EXCLUDED.updated_at",
                record.resource,
                record.name,
                record.resource_id,
                record.digest,
                to_micros(record.updated_at),
            )

    async def claim_managed(self, record: ManagedRecord) -> bool:
        async with self._tx() as conn:
            status = await conn.execute(
                f"INSERT INTO managed_resources ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT (resource, name) DO NOTHING",
                record.resource,
                record.name,
                record.resource_id,
                record.digest,
                to_micros(record.updated_at),
            )
        return bool(status == "INSERT 0 1")

    async def delete_managed(self, resource: str, name: str) -> None:
        async with self._tx() as conn:
            await conn.execute("DELETE FROM managed_resources WHERE resource = $1 AND name = $2", resource, name)

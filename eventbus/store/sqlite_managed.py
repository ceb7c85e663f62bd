"""The config file's markers in the SQLite store (`managed_resources`)."""

from __future__ import annotations

from eventbus.clock import from_micros, to_micros
from eventbus.store.managed import ManagedRecord
from eventbus.store.sqlite_access import StoreAccess

_COLUMNS = "resource, name, resource_id, digest, updated_at"


class ManagedOperations(StoreAccess):
    """Mixed into `SQLiteStore`, which provides the connections (`_read`, `_write`)."""

    async def list_managed(self) -> list[ManagedRecord]:
        sql = f"SELECT {_COLUMNS} FROM managed_resources ORDER BY resource, name"
        rows = await self._read(lambda c: c.execute(sql).fetchall())
        return [ManagedRecord(r[0], r[1], r[2], r[3], from_micros(r[4])) for r in rows]

    async def find_managed(self, resource_id: str) -> ManagedRecord | None:
        sql = f"SELECT {_COLUMNS} FROM managed_resources WHERE resource_id = ?"
        row = await self._read(lambda c: c.execute(sql, (resource_id,)).fetchone())
        return ManagedRecord(row[0], row[1], row[2], row[3], from_micros(row[4])) if row else None

    async def put_managed(self, record: ManagedRecord) -> None:
        values = (record.resource, record.name, record.resource_id, record.digest, to_micros(record.updated_at))
        sql = f"INSERT OR REPLACE INTO managed_resources ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
        await self._write(lambda c: c.execute(sql, values))

    async def claim_managed(self, record: ManagedRecord) -> bool:
        values = (record.resource, record.name, record.resource_id, record.digest, to_micros(record.updated_at))
        sql = f"INSERT OR IGNORE INTO managed_resources ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
        return await self._write(lambda c: c.execute(sql, values).rowcount == 1)

    async def delete_managed(self, resource: str, name: str) -> None:
        sql = "DELETE FROM managed_resources WHERE resource = ? AND name = ?"
        await self._write(lambda c: c.execute(sql, (resource, name)))

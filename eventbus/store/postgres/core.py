"""The PostgreSQL store's life cycle: the pool, migrations (one advisory lock: many processes may start at once),
the LISTEN connection that turns other processes' NOTIFY into local wake-ups, and readiness."""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg
import structlog

from eventbus.errors import InvalidArgumentError, UnavailableError
from eventbus.store.base import Wakeups
from eventbus.store.migrations import load_migrations
from eventbus.store.postgres.access import CHANNEL, CONNECTION_ERRORS, PgAccess

log = structlog.get_logger("eventbus.store")
MIGRATION_LOCK = 0x65766D69  # "evmi"
_SCHEMA_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def parse_url(url: str) -> tuple[str, str | None, int]:
    """(the URL asyncpg connects with, the schema to live in or None, the pool size) from
    `postgresql://user@host:port/db?schema=name&pool=10`; other query parameters go to asyncpg."""
    parts = urlsplit(url)
    kept, schema, pool = [], None, 10
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            if not value or len(value) > 63 or not set(value) <= _SCHEMA_CHARS or value[0].isdigit():
                raise InvalidArgumentError.for_field("store", "schema: 1-63 of [a-z0-9_], not starting with a digit")
            schema = value
        elif key == "pool":
            if not value.isdigit() or not 1 <= int(value) <= 100:
                raise InvalidArgumentError.for_field("store", "pool: a number of connections between 1 and 100")
            pool = int(value)
        else:
            kept.append(f"{key}={value}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), "")), schema, pool


class PostgresCore(PgAccess):
    """Open, migrate, listen, close. Mixed with the operation mixins into `PostgresStore`."""

    def __init__(self, url: str) -> None:
        self._dsn, self._schema, self._pool_size = parse_url(url)
        self.wakeups = Wakeups()
        self._origin = secrets.token_hex(8)
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        # The schema is a startup parameter, not a SET: the pool's reset on release (RESET ALL) returns a
        # connection to its startup settings, so a SET would be lost after the first use.
        settings = {"search_path": self._schema} if self._schema is not None else None
        try:
            # min_size=0: connections are made when an operation needs one (a failure there is UnavailableError).
            # With a floor, asyncpg >= 0.32 reconnects in the background whenever the server is down and logs a
            # traceback through stdlib logging for each failed try (plain text lines in the JSON log).
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=0, max_size=self._pool_size, server_settings=settings, command_timeout=60
            )
            await self._migrate()
        except CONNECTION_ERRORS as exc:
            await self.close()
            raise UnavailableError(f"cannot open the PostgreSQL store: {exc}") from exc
        self._listen_task = asyncio.get_running_loop().create_task(self._listen_forever())

    async def close(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            await asyncio.gather(self._listen_task, return_exceptions=True)
            self._listen_task = None
        if self._listener is not None:
            await asyncio.gather(self._listener.close(), return_exceptions=True)
            self._listener = None
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> None:
        if self._pool is None:
            raise UnavailableError("the store is closed")
        try:
            await self._pool.fetchval("SELECT 1")
        except CONNECTION_ERRORS as exc:
            raise UnavailableError(f"the store does not answer: {exc}") from exc

    async def _migrate(self) -> None:
        pool = self._require_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            if self._schema is not None:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._schema}")
                await conn.execute(f"SET LOCAL search_path TO {self._schema}")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
            )
            done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in load_migrations("postgres"):
                if migration.version in done:
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", migration.version, migration.name
                )
                log.info("store_migrated", version=migration.version, name=migration.name)

    async def _listen_forever(self) -> None:
        """NOTIFY from any process becomes a local wake-up; lost connections are re-made (polling covers gaps)."""
        while True:
            try:
                self._listener = await asyncpg.connect(self._dsn)
                await self._listener.add_listener(CHANNEL, self._on_notify)
                while not self._listener.is_closed():
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("store_listen_failed", error=str(exc))
            await asyncio.sleep(1.0)

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        origin, _, ids = str(payload).partition(" ")
        if origin != self._origin:  # this store's own news woke its waiters at commit already
            self.wakeups.notify([s for s in ids.split(",") if s])

"""The PostgreSQL store's life cycle: the pool, migrations (one advisory lock: many processes may start at once),
the LISTEN connection that turns other processes' NOTIFY into local wake-ups, and readiness."""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg
import structlog

from eventbus.errors import InvalidArgumentError, UnavailableError
from eventbus.store.base import Wakeups
from eventbus.store.migrations import load_migrations
from eventbus.store.postgres.access import CHANNEL, CONNECTION_ERRORS, PgAccess
from eventbus.store.postgres.pg_batch import AppendBatcher

log = structlog.get_logger("eventbus.store")
MIGRATION_LOCK = 0x65766D69  # "evmi"
_SCHEMA_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_OPEN_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, UnavailableError)
_SECONDS = re.compile(r"^[0-9]{1,6}(\.[0-9]{1,3})?$")


@dataclass(frozen=True, slots=True)
class PgOptions:
    """What a `postgresql://` store URL says, besides where to connect."""

    dsn: str  # the URL asyncpg connects with: ours removed, the others kept
    schema: str | None = None
    pool: int = 10
    acquire_timeout: float = 10.0  # seconds an operation waits for a pooled connection, then UNAVAILABLE
    # Seconds a session may sit idle inside a transaction before the server ends it (0: never). A process stalled
    # while holding the append lock (SIGSTOP, a network cut) would otherwise block every append of every process.
    idle_in_transaction_timeout: float = 30.0

    def server_settings(self) -> dict[str, str]:
        """Startup parameters of every pooled connection (not SETs: the pool's RESET ALL on release keeps them).

        With `idle_in_transaction_timeout=0` the parameter is not sent at all: a connection pooler that refuses
        unknown startup parameters (PgBouncer without `ignore_startup_parameters`) can then be used."""
        settings: dict[str, str] = {}
        if self.idle_in_transaction_timeout:
            settings["idle_in_transaction_session_timeout"] = str(round(self.idle_in_transaction_timeout * 1000))
        if self.schema is not None:
            settings["search_path"] = self.schema
        return settings


def _seconds(key: str, value: str, low: float, high: float, *, off: bool = False) -> float:
    if _SECONDS.match(value) and (low <= float(value) <= high or (off and float(value) == 0)):
        return float(value)
    zero = ", or 0 for never" if off else ""
    raise InvalidArgumentError.for_field("store", f"{key}: seconds, a number from {low:g} to {high:g}{zero}")


def parse_options(url: str) -> PgOptions:
    """The options of `postgresql://user@host:port/db?schema=name&pool=10&acquire_timeout=10&
    idle_in_transaction_timeout=30`; other query parameters go to asyncpg. A bad value is refused naming it."""
    parts = urlsplit(url)
    kept, defaults = [], PgOptions("")
    schema, pool = defaults.schema, defaults.pool
    acquire_timeout, idle_timeout = defaults.acquire_timeout, defaults.idle_in_transaction_timeout
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            if not value or len(value) > 63 or not set(value) <= _SCHEMA_CHARS or value[0].isdigit():
                raise InvalidArgumentError.for_field("store", "schema: 1-63 of [a-z0-9_], not starting with a digit")
            schema = value
        elif key == "pool":
            if not value.isdigit() or not 1 <= int(value) <= 100:
                raise InvalidArgumentError.for_field("store", "pool: a number of connections between 1 and 100")
            pool = int(value)
        elif key == "acquire_timeout":
            acquire_timeout = _seconds(key, value, 0.1, 600)
        elif key == "idle_in_transaction_timeout":
            idle_timeout = _seconds(key, value, 0.1, 86400, off=True)
        else:
            kept.append(f"{key}={value}")
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), ""))
    return PgOptions(dsn, schema, pool, acquire_timeout, idle_timeout)


def parse_url(url: str) -> tuple[str, str | None, int]:
    """(the URL asyncpg connects with, the schema or None, the pool size): what a test connecting beside the
    store needs."""
    options = parse_options(url)
    return options.dsn, options.schema, options.pool


class PostgresCore(PgAccess):
    """Open, migrate, listen, close. Mixed with the operation mixins into `PostgresStore`."""

    def __init__(self, url: str) -> None:
        self._options = parse_options(url)
        self._dsn, self._schema = self._options.dsn, self._options.schema
        self._acquire_timeout = self._options.acquire_timeout
        self.wakeups = Wakeups()
        self._origin = secrets.token_hex(8)
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._appends: AppendBatcher | None = None  # made by the first append (`EventOperations`)

    async def open(self) -> None:
        # No lock_timeout: every append of every process queues for the append lock, so a long wait under load is
        # legitimate. A holder that stalls is ended by idle_in_transaction_session_timeout (its lock released, its
        # transaction rolled back), and any wait longer than command_timeout is answered UNAVAILABLE (asyncpg's
        # TimeoutError, in CONNECTION_ERRORS).
        try:
            # min_size=0: connections are made when an operation needs one (a failure there is UnavailableError).
            # With a floor, asyncpg >= 0.32 reconnects in the background whenever the server is down and logs a
            # traceback through stdlib logging for each failed try (plain text lines in the JSON log).
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self._options.pool,
                server_settings=self._options.server_settings(),
                command_timeout=60,
            )
            await self._migrate()
        except _OPEN_ERRORS as exc:
            await self.close()
            raise UnavailableError(f"cannot open the PostgreSQL store: {exc}") from exc
        self._listen_task = asyncio.get_running_loop().create_task(self._listen_forever())

    async def close(self) -> None:
        if self._appends is not None:
            await self._appends.close()
        await self._stop_listening()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> None:
        await self._read("SELECT 1")

    async def _migrate(self) -> None:
        async with self._tx() as conn:
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

    async def _stop_listening(self) -> None:
        """No more NOTIFY from other processes (at close; a test uses it to show that polling alone delivers)."""
        if self._listen_task is not None:
            self._listen_task.cancel()
            await asyncio.gather(self._listen_task, return_exceptions=True)
            self._listen_task = None
        if self._listener is not None:
            await asyncio.gather(self._listener.close(), return_exceptions=True)
            self._listener = None

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        origin, _, ids = str(payload).partition(" ")
        if origin != self._origin:  # this store's own news woke its waiters at commit already
            self.wakeups.notify([s for s in ids.split(",") if s])

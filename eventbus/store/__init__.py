"""Storage: the `Store` Protocol and its backends, chosen by one URL (`sqlite:///path.db`, `postgresql://...`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from eventbus.errors import InvalidArgumentError
from eventbus.store.base import Store

DEFAULT_STORE_URL = "sqlite:///eventbus-data/eventbus.db"


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative/path.db` → `relative/path.db`; `sqlite:////absolute/path.db` → `/absolute/path.db`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise InvalidArgumentError.for_field("store", f"{url!r}: expected sqlite:///relative.db or sqlite:////abs.db")
    return Path(url[len(prefix) :].split("?", 1)[0])


def open_store(url: str) -> Store:
    """The store a URL names (not yet opened: call `await store.open()`)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        from eventbus.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        try:
            from eventbus.store.postgres import PostgresStore
        except ModuleNotFoundError as exc:
            if exc.name != "asyncpg":
                raise
            # A usage error (`eventbus serve` exits 2 with this one line), not a traceback.
            raise InvalidArgumentError.for_field(
                "store", f"{scheme}:// needs asyncpg, which is not installed: pip install 'eventbus[postgres]'"
            ) from None
        return PostgresStore(url)
    raise InvalidArgumentError.for_field(
        "store", f"{url!r}: unknown store scheme {scheme!r} (use sqlite:///... or postgresql://...)"
    )


__all__ = ["DEFAULT_STORE_URL", "Store", "open_store", "sqlite_path"]

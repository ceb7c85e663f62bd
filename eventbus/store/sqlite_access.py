"""What the SQLite store's operation mixins share: the store's connections, wake-ups and fan-out cache."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

from eventbus.store.base import Wakeups
from eventbus.store.sqlite_fanout import SubscriptionCache

T = TypeVar("T")


class StoreAccess:
    """Base of the operation mixins (push, sources, keys, destination state); `SQLiteStore` provides it all."""

    wakeups: Wakeups
    _cache: SubscriptionCache

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

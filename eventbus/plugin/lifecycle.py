"""What the startup and shutdown hooks receive: the process's shared resources."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

__all__ = ["ServerContext"]


@dataclass(frozen=True, slots=True)
class ServerContext:
    """Handed to `eventbus_startup` and then, the same object, to `eventbus_shutdown`.

    `http` is the shared SSRF-guarded aiohttp session (the one destinations get); do not close it. `now`
    reads the core clock (timezone-aware UTC): use it instead of the wall clock so tests can pin time.
    """

    http: aiohttp.ClientSession
    now: Callable[[], datetime]

"""Prefixed, sortable ids: `evt_`, `sub_`, `dlv_`, ... followed by a ULID (monotonic within one process)."""

from __future__ import annotations

import os
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters per 10 bits: 13 table look-ups encode the 130 bits of a ULID (ids are made on the publish path).
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_DECODE = {c: i for i, c in enumerate(_CROCKFORD)}
_lock = threading.Lock()
_last_ms = -1
_last_random = 0

PREFIXES = ("evt", "sub", "src", "dlv", "att", "key")


def ulid(now_ms: int | None = None) -> str:
    """A 26-character ULID. Ids made in the same millisecond by this process still sort in creation order."""
    global _last_ms, _last_random
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            # Same (or a backwards) millisecond: keep the last timestamp and count up, so ids stay sortable.
            ms = _last_ms
            _last_random = (_last_random + 1) & ((1 << 80) - 1)
        else:
            _last_ms = ms
            _last_random = int.from_bytes(os.urandom(10), "big") >> 1  # headroom for increments
        value = (ms << 80) | _last_random
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in range(120, -10, -10)])


def new_id(prefix: str) -> str:
    """`prefix_` + a ULID, e.g. `new_id("evt")` → `evt_01J...`."""
    return f"{prefix}_{ulid()}"


def is_id(value: str, prefix: str) -> bool:
    """True when `value` is `prefix_` followed by a well-formed ULID."""
    head, sep, tail = value.partition("_")
    return head == prefix and sep == "_" and len(tail) == 26 and all(c in _DECODE for c in tail)

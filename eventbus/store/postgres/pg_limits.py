"""Send limits across processes on PostgreSQL: a subscription's concurrency and rate bound every process together.

Each grant is one transaction on the subscription's `subscription_limits` row (`FOR UPDATE`: grants for one
subscription are serialised, whichever process asks). In it, one statement reads the sends in flight (deliveries
marked with their current lease token, see migration 0002) together with the subscription's state and circuit, in
one snapshot; the token bucket is refilled from `now`, and the granted deliveries are marked. Nothing has to be
given back: a slot frees when the attempt's record settles the delivery, when its lease is released or lost, or
when its mark runs out (a process that died mid-send).

A kind's rate shared by key (`shared`) is one more bucket, a `shared_rate_buckets` row (migration 0004) locked after
the subscription's own row: every subscription takes the locks in that order, so grants never deadlock.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from eventbus.clock import from_micros, to_micros
from eventbus.errors import UnavailableError
from eventbus.store.limits import SendGrant, SendLease, SharedRate
from eventbus.store.postgres.access import PgAccess

_DEADLOCK_RETRIES = 3
_LOCK = "SELECT tokens, updated_at FROM subscription_limits WHERE subscription_id = $1 FOR UPDATE"
_STATE = (
    "SELECT s.state, s.circuit, (SELECT count(*) FROM deliveries d WHERE d.subscription_id = s.id "
    "AND d.state = 'leased' AND d.sending_token = d.lease_token AND d.sending_until > $2) "
    "FROM subscriptions s WHERE s.id = $1"
)
_MARK = (
    "UPDATE deliveries d SET sending_token = d.lease_token, sending_until = $1 "
    "FROM unnest($2::text[], $3::bigint[]) AS l(delivery_id, lease_token) "
    "WHERE d.delivery_id = l.delivery_id AND d.state = 'leased' AND d.lease_token = l.lease_token"
)

# The member's row is written only when it changed (no dead row per grant); the lowest rate of the others is read
# in the same statement (a data-modifying WITH is not seen by its own statement: the asker's rate is added after).
_SHARED = (
    "WITH member AS (INSERT INTO shared_rate_members AS m (subscription_id, bucket, rate, settings_at) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT (subscription_id) DO UPDATE SET bucket = EXCLUDED.bucket, "
    "rate = EXCLUDED.rate, settings_at = EXCLUDED.settings_at "
    "WHERE (m.bucket, m.rate, m.settings_at) IS DISTINCT FROM (EXCLUDED.bucket, EXCLUDED.rate, EXCLUDED.settings_at)) "
    "SELECT b.tokens, b.updated_at, b.rate, (SELECT min(o.rate) FROM shared_rate_members o "
    "JOIN subscriptions s ON s.id = o.subscription_id WHERE o.bucket = $2 AND o.subscription_id <> $1 "
    "AND s.state = 'active' AND s.updated_at = o.settings_at) "
    "FROM shared_rate_buckets b WHERE b.bucket = $2 FOR UPDATE OF b"
)


def _refill(tokens: float, updated_at: int, *, rate: float, stamp: int) -> float:
    """The bucket at `stamp`: refilled at `rate` per second up to its burst (a clock that went back refills nothing)."""
    capacity = max(1.0, rate)
    elapsed = max(0, stamp - updated_at) / 1_000_000
    return min(capacity, tokens + elapsed * rate)


@dataclass(frozen=True, slots=True)
class _Bucket:
    tokens: float  # refilled to the grant's time, before it takes any
    rate: float
    updated_at: int  # what to write back
    digest: str = ""  # a shared bucket's row


async def _shared_bucket(conn: asyncpg.Connection, subscription_id: str, shared: SharedRate, stamp: int) -> _Bucket:
    """The key's bucket, locked, refilled to `stamp` and at the lowest rate of its members from now on (what was
    spent stays spent: a change of rate never refills it). Made full on its first grant."""
    digest = hashlib.sha256(shared.key.encode()).hexdigest()  # a plugin's key may be derived from a credential
    args = (subscription_id, digest, shared.rate, to_micros(shared.as_of))
    row = await conn.fetchrow(_SHARED, *args)
    if row is None:
        await conn.execute(
            "INSERT INTO shared_rate_buckets (bucket, rate, tokens, updated_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (bucket) DO NOTHING",
            digest,
            shared.rate,
            max(1.0, shared.rate),
            stamp,
        )
        row = await conn.fetchrow(_SHARED, *args)
        assert row is not None  # made just now, or by a grant that committed first (read committed: seen now)
    tokens, updated_at, was, others = row
    lowest = min(shared.rate, others) if others is not None else shared.rate
    tokens = min(_refill(tokens, updated_at, rate=was, stamp=stamp), max(1.0, lowest))
    return _Bucket(tokens, lowest, max(stamp, updated_at), digest)


async def acquire(
    conn: asyncpg.Connection,
    subscription_id: str,
    leases: Sequence[SendLease],
    *,
    max_concurrency: int,
    rate: float | None,
    sending_for: timedelta,
    now: datetime,
    shared: SharedRate | None = None,
) -> SendGrant:
    """`acquire_send_slots` inside the caller's transaction."""
    stamp = to_micros(now)
    bucket = await conn.fetchrow(_LOCK, subscription_id)
    if bucket is None:  # the subscription's first grant: its row, with a full bucket (none for a gone subscription)
        await conn.execute(
            "INSERT INTO subscription_limits (subscription_id, tokens, updated_at) "
            "SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM subscriptions WHERE id = $1) "
            "ON CONFLICT (subscription_id) DO NOTHING",
            subscription_id,
            max(1.0, rate) if rate else 0.0,
            stamp,
        )
        bucket = await conn.fetchrow(_LOCK, subscription_id)
    # Read after the lock, in one snapshot: a slot seen free (its attempt recorded) comes with the circuit that
    # record may have opened, so no process sends past the failure that opened it.
    row = await conn.fetchrow(_STATE, subscription_id, stamp)
    if bucket is None or row is None or row[0] != "active":
        return SendGrant(0, held=True)
    state_open = row[1] == "open"
    want = len(leases)
    if state_open:
        # Only probes and resends go through an open circuit: grant the ones at the head of the queue.
        want = next((n for n, lease in enumerate(leases) if not lease.through_open_circuit), want)
    granted = min(want, max(0, max_concurrency - int(row[2])))
    retry_at = None
    own = _Bucket(_refill(bucket[0], bucket[1], rate=rate, stamp=stamp), rate, max(stamp, bucket[1])) if rate else None
    key = await _shared_bucket(conn, subscription_id, shared, stamp) if shared is not None else None
    buckets = [b for b in (own, key) if b is not None]
    by_rate = max(0, min((math.floor(b.tokens + 1e-9) for b in buckets), default=granted))
    if granted > by_rate:  # a rate holds the rest back (not a slot): they may go when its next token comes
        granted = by_rate
        wait = max((1.0 - (b.tokens - granted)) / b.rate for b in buckets)
        retry_at = from_micros(stamp + math.ceil(wait * 1_000_000))
    if own is not None:
        await conn.execute(
            "UPDATE subscription_limits SET tokens = $2, updated_at = $3 WHERE subscription_id = $1",
            subscription_id,
            own.tokens - granted,
            own.updated_at,
        )
    if key is not None:
        await conn.execute(
            "UPDATE shared_rate_buckets SET tokens = $2, rate = $3, updated_at = $4 WHERE bucket = $1",
            key.digest,
            key.tokens - granted,
            key.rate,
            key.updated_at,
        )
    if granted:
        chosen = leases[:granted]
        await conn.execute(
            _MARK,
            stamp + sending_for // timedelta(microseconds=1),
            [lease.delivery_id for lease in chosen],
            [lease.lease_token for lease in chosen],
        )
    return SendGrant(granted, retry_at=retry_at, held=state_open and want < len(leases))


class LimitOperations(PgAccess):
    """Mixed into `PostgresStore`: the `SharedSendLimits` capability the dispatcher uses when a store offers it."""

    async def acquire_send_slots(
        self,
        subscription_id: str,
        leases: Sequence[SendLease],
        *,
        max_concurrency: int,
        rate: float | None,
        sending_for: timedelta,
        now: datetime,
        shared: SharedRate | None = None,
    ) -> SendGrant:
        if not leases:
            return SendGrant(0)
        for _ in range(_DEADLOCK_RETRIES):
            try:
                async with self._tx() as conn:
                    return await acquire(
                        conn,
                        subscription_id,
                        leases,
                        max_concurrency=max_concurrency,
                        rate=rate,
                        sending_for=sending_for,
                        now=now,
                        shared=shared,
                    )
            except asyncpg.DeadlockDetectedError:  # not expected (one lock order), but then simply asked again
                continue
        raise UnavailableError("the store is too busy (repeated lock conflicts); try again")

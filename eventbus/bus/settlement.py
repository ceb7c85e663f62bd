"""The retry rules of DESIGN.md §3: what one try's result settles for its delivery (succeeded, retry when, dead
why), and what it tells the circuit (pure), and the record of it, tried again while the store is unreachable."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from eventbus.bus.kinds import SendResult, SendVerdict
from eventbus.bus.retry import next_retry_at
from eventbus.errors import UnavailableError
from eventbus.store.base import (
    DeadReason,
    LeasedDelivery,
    Settle,
    Settlement,
    Store,
    Subscription,
)
from eventbus.store.records import AttemptResult, HealthChange, HealthPolicy, SystemEvents

RECORD_RETRY_FIRST = 0.05  # seconds before recording an attempt again when the store was unreachable
RECORD_RETRY_MOST = 2.0  # the longest wait between two tries


def decide(
    subscription: Subscription,
    delivery: LeasedDelivery,
    result: SendResult,
    started_at: datetime,
    duration: timedelta,
    now: datetime,
) -> AttemptResult:
    """The settlement the retry rules of DESIGN.md §3 give this result."""
    base = Settle(delivery.delivery_id, delivery.lease_token, Settlement.SUCCEEDED)
    healthy: bool | None = False
    disable_reason = None
    if result.verdict is SendVerdict.SUCCESS:
        settle, healthy = base, True
    elif result.verdict is SendVerdict.GONE:
        gone = result.error or "HTTP 410"  # "last error" reads like every other failure's
        settle = Settle(base.delivery_id, base.lease_token, Settlement.DEAD, reason=DeadReason.GONE, error=gone)
        disable_reason = "the destination answered 410 Gone"
    elif result.verdict is SendVerdict.REJECT:
        settle = Settle(
            base.delivery_id, base.lease_token, Settlement.DEAD, reason=DeadReason.REJECTED, error=result.error
        )
        healthy = None
    elif result.error_class == "interrupted":  # our shutdown, not the destination's failure
        settle = Settle(base.delivery_id, base.lease_token, Settlement.RETRY, retry_at=now, error=result.error)
        healthy = None
    elif delivery.manual:  # a resend is one attempt outside the schedule
        settle = Settle(
            base.delivery_id, base.lease_token, Settlement.DEAD, reason=DeadReason.EXHAUSTED, error=result.error
        )
    else:
        retry_after = result.retry_after
        if retry_after is not None:
            retry_after = min(retry_after, subscription.max_pending_age)
        retry_at = next_retry_at(
            schedule=subscription.retry_schedule,
            attempt=delivery.attempt,
            now=now,
            retry_after=retry_after,
            slow_failure=result.slow_failure,
        )
        error = result.error or result.error_class
        since = delivery.pending_since or delivery.first_attempt_at
        last_chance = since + subscription.max_pending_age - timedelta(minutes=1)
        if retry_at is not None and retry_at > last_chance > now:
            # A Retry-After past the max pending age would let it expire untried: one last attempt first.
            retry_at = last_chance
        if retry_at is None:
            settle = Settle(
                base.delivery_id, base.lease_token, Settlement.DEAD, reason=DeadReason.EXHAUSTED, error=error
            )
        else:
            settle = Settle(base.delivery_id, base.lease_token, Settlement.RETRY, retry_at=retry_at, error=error)
    return AttemptResult(
        settle=settle,
        number=delivery.attempt,
        started_at=started_at,
        duration=duration,
        healthy=healthy,
        status_code=result.status_code,
        error_class=result.error_class,
        error=result.error,
        response_headers=result.response_headers,
        response_body=result.response_body,
        probe=delivery.probe,
        manual=delivery.manual,
        disable_reason=disable_reason,
        alert=result.alert and result.verdict is SendVerdict.RETRY,
    )


async def record_while_leased(
    store: Store,
    attempt: AttemptResult,
    *,
    policy: HealthPolicy,
    now: datetime,
    lease_left: timedelta,
    system_events: SystemEvents | None,
) -> tuple[bool, list[HealthChange]]:
    """`store.record_attempt`, tried again while the store is unreachable and the lease has time left.

    A send that went out while the database was down (a restart, a failover) would otherwise stay unrecorded
    until its lease ran out and then be sent a second time; recorded once the store is back, it is not, and the
    next due delivery need not wait for the lease either. Waits are real time (the store's recovery is), backed
    off from 50 ms to 2 s, and end with the lease: after that another process may hold it, and the record would
    no longer settle the delivery. Any other failure is raised at once.
    """
    give_up = time.monotonic() + max(0.0, lease_left.total_seconds())
    wait = RECORD_RETRY_FIRST
    while True:
        try:
            return await store.record_attempt(attempt, policy=policy, now=now, system_events=system_events)
        except UnavailableError:
            if time.monotonic() + wait >= give_up:
                raise
            await asyncio.sleep(wait)
            wait = min(wait * 2, RECORD_RETRY_MOST)

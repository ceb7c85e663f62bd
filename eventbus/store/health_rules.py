"""Push delivery's health rules (circuit, failing warnings, auto-disable) as pure decisions, shared by SQL backends."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from eventbus.clock import from_micros, to_micros
from eventbus.store.records import AttemptResult, HealthChange, HealthChangeKind, HealthPolicy

# What `decide_health` reads of the subscription, in this order.
HEALTH_COLUMNS = (
    "kind, state, circuit, consecutive_failures, failing_since, warnings_sent, failed_probes, last_failure_at, alerted"
)
# A success (or leaving `disabled`) starts the health record afresh.
HEALTH_RESET: dict[str, object] = {
    "circuit": "closed",
    "consecutive_failures": 0,
    "failing_since": None,
    "warnings_sent": 0,
    "circuit_opened_at": None,
    "next_probe_at": None,
    "failed_probes": 0,
    "alerted": 0,
}


def decide_health(
    subscription_id: str, row: Any, result: AttemptResult, policy: HealthPolicy, now: datetime
) -> tuple[dict[str, object], list[HealthChange]]:
    """(the subscription columns to set, the changes to announce) after one attempt; `row` is `HEALTH_COLUMNS`."""
    if result.healthy is None:
        return {}, []
    kind, state, circuit, failures, failing_since, warned, failed_probes, last_failure, alerted = row
    stamp = to_micros(now)
    changes: list[HealthChange] = []

    def change(what: HealthChangeKind, **detail: object) -> None:
        changes.append(HealthChange(what, subscription_id, kind, now, detail))

    if result.healthy:
        if circuit == "open":
            change(HealthChangeKind.CIRCUIT_CLOSED, consecutive_failures=failures)
        if circuit == "open" or failures or failing_since is not None or alerted:
            return dict(HEALTH_RESET), changes
        return {}, changes
    failures += 1
    gap = policy.failing_gap // timedelta(microseconds=1)
    if failing_since is None or (last_failure is not None and stamp - last_failure > gap):
        # A new failing streak: one after a long quiet spell is not five days of failure.
        failing_since, warned, alerted = stamp, 0, 0
    updates: dict[str, object] = {
        "consecutive_failures": failures,
        "failing_since": failing_since,
        "last_failure_at": stamp,
        "warnings_sent": warned,
        "alerted": alerted,
    }
    if circuit == "closed" and failures >= policy.failure_threshold:
        updates.update(circuit="open", circuit_opened_at=stamp, failed_probes=0)
        updates["next_probe_at"] = stamp + policy.probe_delay(0) // timedelta(microseconds=1)
        change(HealthChangeKind.CIRCUIT_OPENED, consecutive_failures=failures, last_error=describe(result))
    elif circuit == "open" and result.probe:
        # Only a failed probe backs the next one off; sends that were in flight when it opened do not.
        updates["failed_probes"] = failed_probes + 1
        updates["next_probe_at"] = stamp + policy.probe_delay(failed_probes + 1) // timedelta(microseconds=1)
    failing_for = timedelta(microseconds=stamp - failing_since)
    level = sum(1 for fraction in policy.warn_at if failing_for >= policy.disable_after * fraction)
    disable_reason = result.disable_reason
    warned_enough = warned > 0 or not policy.warn_at
    if disable_reason is None and failing_for >= policy.disable_after and warned_enough:
        since = from_micros(failing_since).isoformat()
        disable_reason = f"failing since {since} ({days(failing_for)} without a success)"
    if disable_reason is not None and state in ("active", "paused"):
        updates.update(state="disabled", state_reason=disable_reason, updated_at=stamp)
        change(HealthChangeKind.DISABLED, reason=disable_reason, last_error=describe(result))
    elif state == "active" and (level > warned or (result.alert and not alerted)):
        # At least one warning goes out before the endpoint is disabled, even when failures were sparse; a failure
        # the operator must act on (credentials refused) warns at once, once per failing streak.
        updates["warnings_sent"] = max(level, warned)
        updates["alerted"] = 1 if result.alert else alerted
        disable_at = max(from_micros(failing_since) + policy.disable_after, now)
        change(
            HealthChangeKind.FAILING,
            failing_since=from_micros(failing_since).isoformat(),
            disable_at=disable_at.isoformat(),
            consecutive_failures=failures,
            last_error=describe(result),
            alert=result.error if result.alert else None,
        )
    return updates, changes


def describe(result: AttemptResult) -> str:
    if result.status_code is not None:
        return f"HTTP {result.status_code}"
    return f"{result.error_class or 'error'}: {result.error or ''}".strip()


def days(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"

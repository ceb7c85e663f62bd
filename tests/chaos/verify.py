"""The crash harness's checks, on the last (never killed) incarnation, and the summary they produce:

- every acknowledged event is stored exactly once, under the event id it was acknowledged with; an unanswered one
  is stored once or not at all; nothing is stored that was never sent; retried publishes deduplicated;
- every stored event reached every receiver path whose subscription matches it (2xx at least once), and each
  subscription has exactly one delivery per matching event and none for the rest;
- nothing is stuck: every delivery ends `succeeded`, or `pending` with a due time, or `dead` with a reason;
- every failed call failed the documented way (UNAVAILABLE / 503 / a dropped connection), and no server logged a
  traceback.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from eventbus.client import DeliveryStatus, EventBusClient
from eventbus.model import StoredEvent
from tests.chaos.harness import Harness, Incarnation
from tests.chaos.load import Key

SETTLE_WITHIN = 60.0  # seconds for every delivery to be recorded once the receiver has answered all of them
# How a call may fail while its server is killed, or its database is down; anything else is a finding.
EXPECTED_FAILURES = {
    ("grpc", "UNAVAILABLE"),
    ("http", "503"),
    ("http", "ServerDisconnectedError"),
    ("http", "ClientConnectorError"),
    ("http", "ClientOSError"),
}


@dataclass
class Summary:
    backend: str
    seed: int
    kills: int
    startup_kills: int
    database_crashes: int
    events_sent: int
    events_acked: int
    events_stored: int
    unanswered_stored: int  # sent, never acknowledged, yet stored (once): committed before the kill
    unanswered_not_stored: int
    deduped_on_retry: int
    deliveries_expected: int
    deliveries_reached: int
    duplicate_deliveries: int  # 2xx answers beyond the first for one (endpoint, event): at-least-once at work
    receiver_requests: int
    receiver_503s: int
    failed_calls: int
    lost: int
    seconds: float
    kill_phase_seconds: float
    drain_seconds: float
    startup_seconds: list[tuple[float, float]]  # (interpreter and imports, store and servers) per restart

    def render(self) -> str:
        rows = [
            f"chaos [{self.backend}] seed={self.seed} (CHAOS_SEED={self.seed} replays the kill schedule)",
            f"  kills survived          {self.kills} (during start-up: {self.startup_kills}); "
            f"database crashes: {self.database_crashes}",
            f"  events sent/acked/stored {self.events_sent} / {self.events_acked} / {self.events_stored} "
            f"(unanswered: {self.unanswered_stored} stored once, {self.unanswered_not_stored} not stored; "
            f"{self.deduped_on_retry} deduplicated on retry)",
            f"  deliveries              {self.deliveries_reached} of {self.deliveries_expected} reached the receiver; "
            f"{self.duplicate_deliveries} duplicates; {self.receiver_requests} requests, {self.receiver_503s} "
            "answered 503",
            f"  failed publish calls    {self.failed_calls}",
            f"  lost                    {self.lost}",
            f"  wall time               {self.seconds:.1f} s (kills {self.kill_phase_seconds:.1f} s, drain after the "
            f"last kill {self.drain_seconds:.1f} s)",
            f"  restart to ready        median {statistics.median(sum(s) for s in self.startup_seconds):.2f} s "
            f"(imports {statistics.median(s[0] for s in self.startup_seconds):.2f} s, store and servers "
            f"{statistics.median(s[1] for s in self.startup_seconds):.2f} s), max "
            f"{max(sum(s) for s in self.startup_seconds):.2f} s",
        ]
        return "\n".join(rows)


def matches(path: str, stored: StoredEvent) -> bool:
    """The two subscriptions of `Harness._setup`: `/a` takes `order.*`, `/b` every event with `data.even` true."""
    if path == "/a":
        return stored.event.type.startswith("order.") and stored.event.type.count(".") == 1
    data: Any = stored.event.json_data()
    return isinstance(data, dict) and data.get("even") is True


async def _all_events(client: EventBusClient) -> list[StoredEvent]:
    found: list[StoredEvent] = []
    token = ""
    while True:
        page, token = await client.list_events(page_size=1000, page_token=token)
        found.extend(page)
        if not token:
            return found


async def _all_deliveries(client: EventBusClient, subscription_id: str) -> list[DeliveryStatus]:
    found: list[DeliveryStatus] = []
    token = ""
    while True:
        page, token = await client.list_deliveries(subscription_id=subscription_id, page_size=1000, page_token=token)
        found.extend(page)
        if not token:
            return found


def stuck(delivery: DeliveryStatus) -> bool:
    if delivery.state == "succeeded":
        return False
    if delivery.state == "pending":
        return delivery.next_attempt_at is None
    if delivery.state == "dead":
        return not delivery.dead_reason
    return True  # leased after the backlog drained and settled: a lease nobody will finish


async def check(harness: Harness, last: Incarnation, started: float) -> Summary:
    ledger, receiver = harness.ledger, harness.receiver
    assert ledger.violations == [], ledger.violations[:10]
    failed_calls = {o: n for o, n in ledger.outcomes.items() if o[1] not in ("OK", "200", "202")}
    if not set(failed_calls) <= EXPECTED_FAILURES:
        odd = [
            f
            for f in ledger.failures
            if not f.startswith(("grpc UNAVAILABLE", "http 503", "http Server", "http Client"))
        ]
        errors = [line for n in harness.incarnations for line in n.errors]
        raise AssertionError(
            f"calls failed in undocumented ways: {failed_calls}: {odd[-5:]}; server errors: {errors[-5:]}"
        )
    target = last.ready.result()
    assert target is not None
    async with EventBusClient(target.grpc, timeout=30) as client:
        events = [e for e in await _all_events(client) if e.event.source.startswith("/chaos/")]
        stored: Counter[Key] = Counter((e.event.source, e.event.id) for e in events)
        event_ids = {(e.event.source, e.event.id): e.event_id for e in events}
        assert {k: n for k, n in stored.items() if n > 1} == {}, "events stored more than once"
        lost = sorted(set(ledger.acked) - set(stored))
        assert lost == [], f"{len(lost)} acknowledged events not stored, e.g. {lost[:5]}"
        assert set(stored) <= ledger.sent, f"stored but never sent: {sorted(set(stored) - ledger.sent)[:5]}"
        renamed = {k: (v, event_ids[k]) for k, v in ledger.acked.items() if event_ids[k] != v}
        assert renamed == {}, f"acknowledged under one event id, stored under another: {list(renamed.items())[:5]}"

        expected = {(path, e.event_id) for e in events for path in harness.subscriptions if matches(path, e)}
        try:
            await receiver.wait_until(
                lambda: expected <= receiver.succeeded(),
                within=harness.plan.drain_within,
                what=lambda: f"{len(expected - receiver.succeeded())} of {len(expected)} deliveries not received",
            )
        except AssertionError as exc:
            missing = sorted(expected - receiver.succeeded())[:5]
            samples = [(await client.list_deliveries(event_id=event_id))[0] for _, event_id in missing]
            raise AssertionError(f"{exc}; e.g. {missing}: {samples}") from None
        harness.timings["drain_s"] = time.monotonic() - harness.last_kill

        deliveries = await _settled(client, harness)
        for path, subscription_id in harness.subscriptions.items():
            mine = [d for d in deliveries if d.subscription_id == subscription_id]
            per_event = Counter(d.event_id for d in mine)
            assert {e: n for e, n in per_event.items() if n > 1} == {}, f"{path}: more than one delivery per event"
            wanted = {event_id for p, event_id in expected if p == path}
            assert set(per_event) == wanted, (
                f"{path}: deliveries for {len(set(per_event) - wanted)} events that do not match, none for "
                f"{len(wanted - set(per_event))} that do"
            )
        assert [d for d in deliveries if stuck(d)] == [], "stuck deliveries"

    tracebacks = [n.number for n in harness.incarnations if any("Traceback" in line for line in n.errors)]
    assert tracebacks == [], (
        f"servers {tracebacks} logged a traceback (all logs: {harness.log_path}), e.g.: "
        f"{next(line for n in harness.incarnations for line in n.errors if 'Traceback' in line)[:3000]}"
    )
    unanswered = ledger.sent - set(ledger.acked)
    reached = expected & receiver.succeeded()
    return Summary(
        backend=harness.store.split(":", 1)[0],
        seed=harness.plan.seed,
        kills=harness.kills,
        startup_kills=harness.startup_kills,
        database_crashes=sum(harness.database_crashes.values()),
        events_sent=len(ledger.sent),
        events_acked=len(ledger.acked),
        events_stored=len(stored),
        unanswered_stored=len(unanswered & set(stored)),
        unanswered_not_stored=len(unanswered - set(stored)),
        deduped_on_retry=ledger.deduped_events,
        deliveries_expected=len(expected),
        deliveries_reached=len(reached),
        duplicate_deliveries=sum(receiver.answers[key].count(200) - 1 for key in reached),
        receiver_requests=receiver.requests,
        receiver_503s=sum(statuses.count(503) for statuses in receiver.answers.values()),
        failed_calls=sum(failed_calls.values()),
        lost=len(lost),
        seconds=time.monotonic() - started,
        kill_phase_seconds=harness.timings["kill_phase_s"],
        drain_seconds=harness.timings["drain_s"],
        startup_seconds=harness.startup_seconds,
    )


async def _settled(client: EventBusClient, harness: Harness) -> list[DeliveryStatus]:
    """Every delivery of the run's subscriptions once none is leased or pending any more (each 2xx is recorded
    just after the receiver answered it; a 503 or an answer a killed server never read is retried 1 s later).
    At the bound, what is there is returned: the caller's `stuck` check then tells a wait from a hang."""
    deadline = time.monotonic() + SETTLE_WITHIN
    while True:
        found: list[DeliveryStatus] = []
        for subscription_id in harness.subscriptions.values():
            found.extend(await _all_deliveries(client, subscription_id))
        if all(d.state in ("succeeded", "dead") for d in found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)  # a poll interval: each round is a store read on the server

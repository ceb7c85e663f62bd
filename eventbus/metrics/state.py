"""Gauges of stored state (backlog, dead letters, circuits, group lag) and plugin failures, read at scrape time.

prometheus_client collects synchronously, the store answers asynchronously: the `/metrics` handler awaits
`refresh()` first, which reads the store at most once per `ttl` seconds (concurrent scrapes share that one read),
and `collect()` then renders the snapshot. A failed read keeps the last snapshot and counts the failure.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import structlog
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from eventbus.clock import Clock
from eventbus.metrics.registry import OTHER, LabelCap, Metrics
from eventbus.store.metrics_queries import MetricsQueries, StoreCounts, SubscriptionBacklog

log = structlog.get_logger("eventbus.metrics")

GROUP_KIND = "grpc"  # consumer groups: their backlog is their lag, and they have no circuit
BACKLOG_STATES = ("pending", "scheduled", "held", "leased")
CIRCUIT_STATES = ("closed", "open", "half_open")
DEFAULT_TTL = 2.0  # seconds a store read serves scrapes: a scrape storm costs one read per this


@dataclass(frozen=True, slots=True)
class _Snapshot:
    counts: StoreCounts
    oldest_age: float  # seconds, at the time of the read


def split_backlog(backlog: SubscriptionBacklog) -> dict[str, int]:
    """DESIGN.md's `pending` deliveries split by why they wait: `pending` (due now: waiting for a send slot),
    `scheduled` (a retry or delayed publish, due later), `held` (paused, disabled, circuit not closed, or behind
    an earlier delivery of the same subject); plus `leased` (being sent)."""
    blocked = max(0, backlog.pending + backlog.leased - backlog.unblocked)
    if backlog.state != "active" or backlog.circuit != "closed":
        return {"pending": 0, "scheduled": 0, "held": backlog.pending, "leased": backlog.leased}
    free = max(0, backlog.pending - blocked)
    due = min(backlog.due, free)  # an expired lease counts as due in the index: never more than the free ones
    return {"pending": due, "scheduled": free - due, "held": blocked, "leased": backlog.leased}


class StoreState(Collector):
    """The scrape-time collector of one server (registered in its `Metrics.registry`)."""

    def __init__(
        self,
        metrics: Metrics,
        queries: MetricsQueries,
        clock: Clock,
        plugin_failures: Callable[[], Mapping[tuple[str, str], int]] = dict,
        *,
        ttl: float = DEFAULT_TTL,
    ) -> None:
        self.ttl = ttl
        self._labels: LabelCap = metrics.subscriptions
        self._queries = queries
        self._clock = clock
        self._plugin_failures = plugin_failures
        self._snapshot: _Snapshot | None = None
        self._read_at: float | None = None
        self._lock = asyncio.Lock()
        self.read_errors = Counter(
            "eventbus_metrics_store_errors",
            "Scrape-time store reads that failed (the last good values are served meanwhile).",
            registry=metrics.registry,
        )
        metrics.registry.register(self)

    async def refresh(self) -> None:
        """Read the store unless a read younger than `ttl` exists (or is under way: then wait for it)."""
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():
                return
            now = self._clock.now()
            try:
                counts = await self._queries.store_counts(now=now)
            except Exception as exc:  # a scrape still answers, with the counters and the last good gauges
                self.read_errors.inc()
                log.warning("metrics_store_read_failed", error=str(exc))
            else:
                oldest = counts.oldest_received_at
                self._snapshot = _Snapshot(counts, max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
            self._read_at = asyncio.get_running_loop().time()

    def _fresh(self) -> bool:
        return self._read_at is not None and asyncio.get_running_loop().time() - self._read_at < self.ttl

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._snapshot))

    def _families(self, snapshot: _Snapshot | None) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "eventbus_deliveries", "Undelivered deliveries by state (pending = due now).", labels=["state"]
        )
        per_subscription = GaugeMetricFamily(
            "eventbus_subscription_deliveries",
            "Undelivered deliveries of push subscriptions by subscription and state (ids up to the label cap).",
            labels=["subscription", "state"],
        )
        oldest = GaugeMetricFamily(
            "eventbus_oldest_pending_age_seconds",
            "Age of the oldest event with an undelivered delivery (held ones included); 0 when none.",
        )
        dead = GaugeMetricFamily("eventbus_dead_letters", "Dead deliveries still stored, by reason.", labels=["reason"])
        circuits = GaugeMetricFamily(
            "eventbus_circuits", "Push subscriptions by circuit-breaker state.", labels=["state"]
        )
        subscriptions = GaugeMetricFamily(
            "eventbus_subscriptions", "Subscriptions by kind and state.", labels=["kind", "state"]
        )
        lag = GaugeMetricFamily(
            "eventbus_group_lag", "Undelivered deliveries of each durable consumer group.", labels=["group"]
        )
        plugin_errors = CounterMetricFamily(
            "eventbus_plugin_errors", "Plugin calls that raised or broke the contract.", labels=["plugin", "hook"]
        )
        if snapshot is not None:
            self._fill(snapshot, backlog, per_subscription, oldest, dead, circuits, subscriptions, lag)
        for (plugin, hook), count in sorted(self._plugin_failures().items()):
            plugin_errors.add_metric([plugin, hook], count)
        yield from (backlog, per_subscription, oldest, dead, circuits, subscriptions, lag, plugin_errors)

    def _fill(
        self,
        snapshot: _Snapshot,
        backlog: GaugeMetricFamily,
        per_subscription: GaugeMetricFamily,
        oldest: GaugeMetricFamily,
        dead: GaugeMetricFamily,
        circuits: GaugeMetricFamily,
        subscriptions: GaugeMetricFamily,
        lag: GaugeMetricFamily,
    ) -> None:
        totals: Tally[str] = Tally(dict.fromkeys(BACKLOG_STATES, 0))
        by_subscription: Tally[tuple[str, str]] = Tally()
        circuit_counts: Tally[str] = Tally(dict.fromkeys(CIRCUIT_STATES, 0))
        kinds: Tally[tuple[str, str]] = Tally()
        lags: Tally[str] = Tally()
        for item in snapshot.counts.subscriptions:  # in id order: ULIDs, so the oldest subscriptions label first
            kinds[(item.kind, item.state)] += 1
            if item.kind == GROUP_KIND:
                if not item.ephemeral:  # ephemeral groups come and go with a `tail`: no series of their own
                    lags[self._labels(item.name or item.subscription_id)] += item.pending + item.leased
                continue
            circuit_counts[item.circuit] += 1
            label = self._labels(item.subscription_id)
            for state, count in split_backlog(item).items():
                totals[state] += count
                by_subscription[(label, state)] += count
        for state, count in totals.items():
            backlog.add_metric([state], count)
        for (label, state), count in sorted(by_subscription.items(), key=lambda kv: (kv[0][0] == OTHER, kv[0])):
            per_subscription.add_metric([label, state], count)
        oldest.add_metric([], snapshot.oldest_age)
        for reason, count in sorted(snapshot.counts.dead.items()):
            dead.add_metric([reason], count)
        for state, count in circuit_counts.items():
            circuits.add_metric([state], count)
        for (kind, state), count in sorted(kinds.items()):
            subscriptions.add_metric([kind, state], count)
        for group, count in sorted(lags.items()):
            lag.add_metric([group], count)

"""The server's Prometheus metrics: one `CollectorRegistry` per server, with cheap hot-path recorders.

Tests run many servers in one process, so nothing here touches prometheus_client's global default registry. Label
values that callers choose (sources, types, subscription ids) go through a `LabelCap`, so a publisher inventing a
new type per event cannot grow the series without bound. Children (a metric with its labels bound) are cached by
their raw label values: after the first event of a (source, type), recording one is a dict lookup and an `inc()`.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from eventbus import __version__

if TYPE_CHECKING:
    from eventbus.model import Event
    from eventbus.store.base import Subscription

OTHER: Final = "other"
SOURCE_LABELS: Final = 100  # distinct event sources labelled by value; later ones are `other`
TYPE_LABELS: Final = 250  # distinct event types labelled by value
DEFAULT_SUBSCRIPTION_LABELS: Final = 100  # ServerSettings.metrics_subscription_labels overrides it
_CHILD_CACHE: Final = 4096  # bound of each child cache: overflowing values are capped on every call instead
# Publishing is a durable commit (an fsync, or a PostgreSQL round trip): from half a millisecond to seconds.
PUBLISH_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# An attempt is an HTTP request to someone else's server, up to its timeout (30 s by default).
ATTEMPT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LabelCap:
    """Admits the first `limit` distinct values as labels; every later one becomes `other`.

    First come, first labelled: a value keeps its label for the life of the process, so a series never changes
    meaning between scrapes (what a counter needs). `limit` 0 labels everything `other`.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._admitted: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._admitted:
            return value
        if len(self._admitted) < self.limit:
            self._admitted.add(value)
            return value
        return OTHER


class Metrics:
    """Every counter and histogram of one server, and the recorders the bus, dispatcher and transports call."""

    def __init__(self, *, subscription_labels: int = DEFAULT_SUBSCRIPTION_LABELS) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.sources = LabelCap(SOURCE_LABELS)
        self.types = LabelCap(TYPE_LABELS)
        # Subscription ids (and consumer-group names) share one cap, so the hot-path counters and the gauges read
        # from the store at scrape time label the same subscriptions.
        self.subscriptions = LabelCap(subscription_labels)
        r = self.registry
        self.build_info = Gauge(
            "eventbus_build_info", "Always 1; the labels say what runs.", ["version", "python"], registry=r
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.published_total = Counter(
            "eventbus_events_published",
            "New events stored by publish (gRPC Publish, POST /events), by source and type.",
            ["source", "type"],
            registry=r,
        )
        self.ingested_total = Counter(
            "eventbus_events_ingested",
            "New events stored from provider webhooks (POST /hooks/{source}), by source and type.",
            ["source", "type"],
            registry=r,
        )
        self.duplicates_total = Counter(
            "eventbus_events_duplicates",
            "Events answered as duplicates (same source and id inside the dedup window): nothing stored.",
            ["path"],
            registry=r,
        )
        self.publish_seconds = Histogram(
            "eventbus_publish_duration_seconds",
            "Publish calls from validation to the durable commit (one call may carry a batch).",
            buckets=PUBLISH_BUCKETS,
            registry=r,
        )
        self.attempts_total = Counter(
            "eventbus_delivery_attempts",
            "Delivery attempts recorded by the dispatcher, by subscription and what they settled: "
            "succeeded, retry, dead, lease_lost.",
            ["subscription", "outcome"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "eventbus_attempt_duration_seconds",
            "Time from sending a delivery to its destination's answer (or failure), by subscription kind.",
            ["kind"],
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.grpc_total = Counter(
            "eventbus_grpc_requests",
            "gRPC calls handled, by full method name and status code (streams count when they end).",
            ["method", "code"],
            registry=r,
        )
        self.grpc_seconds = Histogram(
            "eventbus_grpc_request_duration_seconds",
            "gRPC call duration by method (a stream's whole life).",
            ["method"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.http_total = Counter(
            "eventbus_http_requests",
            "HTTP requests answered, by route template (never the raw path), method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "eventbus_http_request_duration_seconds",
            "HTTP request duration by route template and method.",
            ["route", "method"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self._published: dict[tuple[str, str], Counter] = {}
        self._ingested: dict[tuple[str, str], Counter] = {}
        self._duplicates = {path: self.duplicates_total.labels(path) for path in ("publish", "hooks")}
        self._attempt_children: dict[tuple[str, str], Counter] = {}
        self._attempts: dict[str, Histogram] = {}
        self._grpc: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._http: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    # -- hot paths: a dict lookup per event or attempt once its labels were seen -----------------------------

    def published(self, events: Sequence[Event], duplicates: Sequence[bool], seconds: float) -> None:
        """One publish call committed `events` (`duplicates[i]`: the i-th was a duplicate) in `seconds`."""
        self.publish_seconds.observe(seconds)
        self._count_events(self._published, self.published_total, "publish", events, duplicates)

    def ingested(self, events: Sequence[Event], duplicates: Sequence[bool]) -> None:
        """One provider webhook committed `events` (its timing is the HTTP request's)."""
        self._count_events(self._ingested, self.ingested_total, "hooks", events, duplicates)

    def replayed(self, path: str, count: int) -> None:
        """A redelivery answered from the stored outcome: its `count` events were all duplicates."""
        self._duplicates[path].inc(count)

    def attempted(self, subscription: Subscription, outcome: str, duration: timedelta) -> None:
        """The dispatcher recorded one attempt of `subscription` that took `duration` and settled `outcome`
        (`succeeded`, `retry`, `dead`, or `lease_lost` when its lease had run out meanwhile)."""
        outcome = str(outcome)
        key = (subscription.id, outcome)
        child = self._attempt_children.get(key)
        if child is None:
            child = self.attempts_total.labels(self.subscriptions(subscription.id), outcome)
            if len(self._attempt_children) < _CHILD_CACHE:
                self._attempt_children[key] = child
        child.inc()
        timer = self._attempts.get(subscription.kind)
        if timer is None:  # kinds are the registered ones (webhook and the plugins' destinations): few
            timer = self._attempts[subscription.kind] = self.attempt_seconds.labels(subscription.kind)
        timer.observe(duration.total_seconds())

    def grpc_call(self, method: str, code: str, seconds: float) -> None:
        """A call to a registered method (the server's own: a bounded set) ended with `code`."""
        key = (method, code)
        children = self._grpc.get(key)
        if children is None:
            children = self._grpc[key] = (self.grpc_total.labels(method, code), self.grpc_seconds.labels(method))
        children[0].inc()
        children[1].observe(seconds)

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """A request to `route` (a template, or `unmatched`) was answered `status`."""
        if method not in HTTP_METHODS:
            method = OTHER  # the method token is the client's: any string
        key = (route, method, status)
        children = self._http.get(key)
        if children is None:
            children = (self.http_total.labels(route, method, str(status)), self.http_seconds.labels(route, method))
            self._http[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def _count_events(
        self,
        cache: dict[tuple[str, str], Counter],
        counter: Counter,
        path: str,
        events: Sequence[Event],
        duplicates: Sequence[bool],
    ) -> None:
        for event, duplicate in zip(events, duplicates, strict=True):
            if duplicate:
                self._duplicates[path].inc()
                continue
            key = (event.source, event.type)
            child = cache.get(key)
            if child is None:
                child = counter.labels(self.sources(event.source), self.types(event.type))
                if len(cache) < _CHILD_CACHE:
                    cache[key] = child
            child.inc()

"""Delivery kinds: what a subscription kind the dispatcher sends to must provide (webhook built in, plugins later)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from eventbus.errors import InvalidArgumentError
from eventbus.store.base import LeasedDelivery, Subscription


class SendVerdict(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"  # failed this time: the retry schedule decides when again
    REJECT = "reject"  # refused for good (dead `rejected`): the destination is healthy, the event is not welcome
    GONE = "gone"  # the destination is gone (HTTP 410): dead `gone`, and the subscription is disabled


@dataclass(frozen=True, slots=True)
class SendResult:
    """One try's outcome and what to log of it."""

    verdict: SendVerdict
    status_code: int | None = None
    error_class: str | None = None  # timeout, connect, dns, tls, reset, ssrf, plugin, ...
    error: str | None = None
    response_headers: tuple[tuple[str, str], ...] = ()
    response_body: bytes = b""
    retry_after: timedelta | None = None  # the destination asked for this delay (Retry-After)
    slow_failure: bool = False  # a timeout or a 429: the next retry waits at least 60 s
    alert: bool = False  # the operator must act (e.g. credentials refused): `failing` at the streak's first failure


@dataclass(frozen=True, slots=True)
class PreparedOptions:
    """A kind's validated options and credentials, ready to store; `revealed` is shown once to the creator."""

    options: dict[str, object]
    secrets: dict[str, object]
    revealed: dict[str, object]


class DeliveryKind(Protocol):
    """A subscription kind whose deliveries the dispatcher sends (not `grpc`: consumers pull those)."""

    name: str
    default_max_concurrency: int

    async def prepare(
        self, options: Mapping[str, object], *, existing: Subscription | None, now: datetime
    ) -> PreparedOptions:
        """Validate `options` (raising `InvalidArgumentError` naming `options.<key>`) into what is stored.

        `existing` is the subscription being updated (None on creation): credentials not given are kept.
        """
        ...

    def describe(self, subscription: Subscription) -> dict[str, object]:
        """The options as shown to operators: never a secret."""
        ...

    def attempt_timeout(self, subscription: Subscription) -> timedelta:
        """The longest one try may take; leases last longer than this."""
        ...

    def shared_rate_limit(self, subscription: Subscription) -> tuple[str, float] | None:
        """A (key, per-second rate) shared by every subscription of this kind with the same key, or None."""
        ...

    async def send(self, subscription: Subscription, delivery: LeasedDelivery, *, now: datetime) -> SendResult:
        """Try once. Must not raise for the destination's failures: they are results."""
        ...


class KindRegistry:
    """The delivery kinds this process knows, by name."""

    def __init__(self) -> None:
        self._kinds: dict[str, DeliveryKind] = {}

    def add(self, kind: DeliveryKind) -> None:
        if kind.name in self._kinds or kind.name == "grpc":
            raise ValueError(f"delivery kind {kind.name!r} is already registered")
        self._kinds[kind.name] = kind

    def get(self, name: str, field: str = "kind") -> DeliveryKind:
        kind = self._kinds.get(name)
        if kind is None:
            known = ", ".join(sorted([*self._kinds, "grpc"]))
            raise InvalidArgumentError.for_field(field, f"unknown subscription kind {name!r}; known: {known}")
        return kind

    def find(self, name: str) -> DeliveryKind | None:
        return self._kinds.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._kinds))

"""The outbound destination contract: a delivery and a context in; success, retry or reject out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from eventbus.model import StoredEvent

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "Delivery",
    "Destination",
    "DestinationContext",
    "DestinationResult",
    "KeyValueState",
    "Outcome",
]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one subscription; `attempt` counts from 1."""

    delivery_id: str
    subscription_id: str
    event: StoredEvent
    attempt: int
    first_attempt_at: datetime


class KeyValueState(Protocol):
    """A small persistent key-value state of one subscription, shared by every process of the deployment.

    For what must survive a restart or be seen by the other processes, e.g. a refreshed OAuth token. Keys of
    one subscription never meet another's. Small values only (tokens, cursors): it is not a database.
    """

    async def get(self, key: str) -> str | None:
        """The value of `key`, or None when absent or expired."""
        ...

    async def set(self, key: str, value: str, *, ttl: timedelta | None = None) -> None:
        """Store `value` under `key`; with `ttl` it expires that long after now."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key` (no error when absent)."""
        ...


@dataclass(frozen=True, slots=True)
class DestinationContext:
    """What a destination gets besides the delivery.

    `http` is the process's shared, SSRF-guarded aiohttp session: use it for every outbound request (it
    refuses private networks unless the operator allowed them) and pass `allow_redirects=False`. `options`
    are the subscription's, as `validate_options` returned them. `now` is the core clock's time.
    """

    http: aiohttp.ClientSession
    options: Mapping[str, object]
    state: KeyValueState
    now: datetime


class Outcome(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"  # failed this time: tried again on the subscription's retry schedule
    REJECT = "reject"  # refused for good: the delivery goes dead (`rejected`), the subscription stays healthy


@dataclass(frozen=True, slots=True)
class DestinationResult:
    """How one try ended. Build it with `success()`, `retry(...)` or `reject(...)`.

    `retry_after` (retry only) asks for at least that delay before the next try, e.g. from the receiver's
    Retry-After; the schedule's own delay applies when it is longer. `status_code` is the receiver's HTTP
    status, when there was one, for the attempt log.
    """

    outcome: Outcome
    reason: str | None = None
    retry_after: timedelta | None = None
    status_code: int | None = None

    def __post_init__(self) -> None:
        if self.outcome is Outcome.REJECT and not self.reason:
            raise ValueError("a rejection needs a reason")
        if self.retry_after is not None and (self.outcome is not Outcome.RETRY or self.retry_after < timedelta(0)):
            raise ValueError("retry_after is a non-negative delay, for retry only")

    @classmethod
    def success(cls, *, status_code: int | None = None) -> DestinationResult:
        return cls(Outcome.SUCCESS, status_code=status_code)

    @classmethod
    def retry(
        cls, reason: str | None = None, *, delay: timedelta | float | None = None, status_code: int | None = None
    ) -> DestinationResult:
        """Try again later; `delay` (seconds or a timedelta) is the least wait the destination asks for."""
        retry_after = timedelta(seconds=delay) if isinstance(delay, int | float) else delay
        return cls(Outcome.RETRY, reason, retry_after, status_code)

    @classmethod
    def reject(cls, reason: str, *, status_code: int | None = None) -> DestinationResult:
        """Never try this delivery again (the event is not welcome there); `reason` is kept with it."""
        return cls(Outcome.REJECT, reason, status_code=status_code)


class Destination(Protocol):
    """An outbound delivery kind; one instance serves every subscription of that kind."""

    @property
    def name(self) -> str:
        """Unique among destinations: the subscription `kind` that selects it (not `webhook` nor `grpc`)."""
        ...

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        """Check a subscription's options when it is created or updated; return them normalised.

        Raise `eventbus.errors.InvalidArgumentError.for_field("options.<key>", why)` for a bad one.
        """
        ...

    async def deliver(self, delivery: Delivery, context: DestinationContext) -> DestinationResult:
        """Try once to hand `delivery` over. Expected failures are results (`retry`, `reject`), not exceptions.

        Raising is a bug: the attempt fails with error class `plugin`, is retried on the schedule, and the
        failure is logged and counted against the plugin.
        """
        ...

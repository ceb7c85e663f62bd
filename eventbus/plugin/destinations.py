"""The outbound destination contract: a delivery and a context in; success, retry or reject out."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from eventbus.egress.client import EgressClient, EgressError, EgressResponse
from eventbus.model import StoredEvent

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "Delivery",
    "Destination",
    "DestinationContext",
    "DestinationResult",
    "HttpError",
    "HttpResponse",
    "KeyValueState",
    "Outcome",
    "RateLimit",
]

# What `DestinationContext.request` answers and raises (the same types the webhook kind uses).
HttpResponse = EgressResponse
HttpError = EgressError
MAX_RESPONSE_EXCERPT = 64 * 1024
_SCOPE = re.compile(r"[A-Za-z0-9._:-]{1,100}")


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

    async def set(self, key: str, value: str, *, ttl: timedelta | float | None = None) -> None:
        """Store `value` under `key`; with `ttl` (a timedelta or seconds) it expires that long after now."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key` (no error when absent)."""
        ...


@dataclass(frozen=True, slots=True)
class DestinationContext:
    """What a destination gets besides the delivery.

    `request(...)` sends one HTTP request through the process's shared, SSRF-guarded client (private networks
    refused unless the operator allowed them, no redirects followed, the answer read up to a cap within the
    timeout); `http` is that client's aiohttp session, for what `request` cannot do. `options` are the
    subscription's, as `validate_options` returned them, secret options included. `state` is the
    subscription's persistent key-value state; `shared_state(scope)` one shared by every subscription of this
    destination kind that names the same scope (e.g. one OAuth authorization used by several subscriptions).
    `now` is the core clock's time when the attempt started; `deadline` (seconds) is what is left of the
    attempt's time when `deliver` is called.
    """

    client: EgressClient
    options: Mapping[str, object]
    state: KeyValueState
    now: datetime
    subscription_id: str = ""
    deadline: float = 30.0
    scopes: Callable[[str], KeyValueState] | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        return self.client.session

    def shared_state(self, scope: str) -> KeyValueState:
        """The persistent key-value state of `scope` (1-100 characters of `[A-Za-z0-9._:-]`), shared by every
        subscription of this destination kind, in every process, that names it. Derive the scope from what the
        subscriptions share (a digest of an account or an authorization), never from a secret itself."""
        if not _SCOPE.fullmatch(scope):
            raise ValueError("a state scope is 1-100 characters of [A-Za-z0-9._:-]")
        if self.scopes is None:
            raise RuntimeError("this context has no shared state (build it with scopes=...)")
        return self.scopes(scope)

    async def request(
        self,
        method: str,
        url: str,
        *,
        json_body: object = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        body_limit: int = MAX_RESPONSE_EXCERPT,
    ) -> HttpResponse:
        """One request; raises `HttpError` (with `error_class` timeout, connect, dns, tls, reset or ssrf) when no
        HTTP answer came. `json_body` is sent as `application/json`. The answer's body is read up to
        `body_limit` bytes (64 KiB at most; `truncated` says when there was more). Letting an `HttpError`
        escape `deliver` is fine: the attempt is logged with its class and retried, not counted as a bug.
        """
        send_headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            send_headers.setdefault("Content-Type", "application/json")
        return await self.client.request(
            method,
            url,
            body,
            send_headers,
            timeout=min(timeout or self.deadline, self.deadline),
            body_limit=min(body_limit, MAX_RESPONSE_EXCERPT),
        )


class Outcome(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"  # failed this time: tried again on the subscription's retry schedule
    REJECT = "reject"  # refused for good: the delivery goes dead (`rejected`), the subscription stays healthy


@dataclass(frozen=True, slots=True)
class DestinationResult:
    """How one try ended. Build it with `success()`, `retry(...)` or `reject(...)`.

    `retry_after` (retry only) asks for at least that delay before the next try, e.g. from the receiver's
    Retry-After; the schedule's own delay applies when it is longer. For the attempt log: `status_code` (the
    receiver's HTTP status, when there was one), `response` (its answer: headers and the first 4 KiB of the body
    are kept), `error_class` (a short word: `timeout`, `auth`, `validation`, `rate_limited`, ...). `alert`
    (a failure the operator must act on, e.g. credentials refused) also publishes an
    `eventbus.endpoint.failing` system event at the first failure of a streak instead of waiting for the
    failing warnings.
    """

    outcome: Outcome
    reason: str | None = None
    retry_after: timedelta | None = None
    status_code: int | None = None
    response: HttpResponse | None = None
    error_class: str | None = None
    alert: bool = False

    def __post_init__(self) -> None:
        if self.outcome is Outcome.REJECT and not self.reason:
            raise ValueError("a rejection needs a reason")
        if self.retry_after is not None and (self.outcome is not Outcome.RETRY or self.retry_after < timedelta(0)):
            raise ValueError("retry_after is a non-negative delay, for retry only")

    @classmethod
    def success(cls, *, status_code: int | None = None, response: HttpResponse | None = None) -> DestinationResult:
        return cls(Outcome.SUCCESS, status_code=_status(status_code, response), response=response)

    @classmethod
    def retry(
        cls,
        reason: str | None = None,
        *,
        delay: timedelta | float | None = None,
        status_code: int | None = None,
        response: HttpResponse | None = None,
        error_class: str | None = None,
        alert: bool = False,
    ) -> DestinationResult:
        """Try again later; `delay` (seconds or a timedelta) is the least wait the destination asks for."""
        retry_after = timedelta(seconds=delay) if isinstance(delay, int | float) else delay
        status = _status(status_code, response)
        return cls(Outcome.RETRY, reason, retry_after, status, response, error_class, alert)

    @classmethod
    def reject(
        cls,
        reason: str,
        *,
        status_code: int | None = None,
        response: HttpResponse | None = None,
        error_class: str | None = None,
    ) -> DestinationResult:
        """Never try this delivery again (the event is not welcome there); `reason` is kept with it."""
        status = _status(status_code, response)
        return cls(Outcome.REJECT, reason, status_code=status, response=response, error_class=error_class)


def _status(status_code: int | None, response: HttpResponse | None) -> int | None:
    return status_code if status_code is not None or response is None else response.status


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A send rate shared by every subscription whose options give the same `key` (e.g. one provider account).

    `per_second` may be fractional (120 per minute is 2.0). One token bucket per key, at the lowest rate among
    the subscriptions sharing it, for every process of the deployment together (on PostgreSQL it is kept in the
    database); the provider's 429 answers may still slow it further.
    """

    key: str
    per_second: float

    def __post_init__(self) -> None:
        if not self.key or not 0 < self.per_second <= 10_000:
            raise ValueError("a rate limit needs a key and a rate between 0 and 10000 per second")


class Destination(Protocol):
    """An outbound delivery kind; one instance serves every subscription of that kind.

    Optional members, read when present:

    - `secret_options: frozenset[str]`: option names that are credentials (API keys, client secrets). They are
      stored apart from the other options, never shown back (listings show `***`, nothing of them),
      kept on update when not given again, and handed to `deliver` in `context.options`.
    - `timeout: float`: the seconds one `deliver` call may take (default 30, at most 120); it is cancelled
      after that and the attempt is retried with error class `timeout`.
    - `rate_limit(options) -> RateLimit | None`: a rate shared by the subscriptions with the same key, applied
      by the dispatcher before a delivery is sent (no attempt is spent waiting for it).
    - `default_max_concurrency: int`: sends in flight per subscription when it sets none (default 10).
    """

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

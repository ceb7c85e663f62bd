"""Plugin destinations as delivery kinds: the webhook machinery (leases, attempts, retries, circuit, dead letters,
recovery, explainer) sends through them unchanged; only one try's exchange is the plugin's (DESIGN.md §6)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType

import structlog

from eventbus.bus.kinds import PreparedOptions, SendResult, SendVerdict
from eventbus.clock import Clock
from eventbus.egress.client import EgressClient
from eventbus.errors import EventBusError, InvalidArgumentError
from eventbus.plugin.destinations import Delivery, Destination, DestinationContext, DestinationResult, Outcome
from eventbus.plugin.manager import PluginFailure, Plugins
from eventbus.store.base import LeasedDelivery, Subscription
from eventbus.store.state import MAX_KEY_LENGTH, MAX_KEYS, MAX_VALUE_LENGTH, StateStore

log = structlog.get_logger("eventbus.destinations")
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 120.0
RESPONSE_EXCERPT = 4096


class StoredState:
    """`KeyValueState` of one subscription (or of a shared scope), kept in the store: it outlives the process and
    every process sees it. `used` runs before the first access (a shared scope records who uses it)."""

    def __init__(
        self,
        store: StateStore,
        subscription_id: str,
        clock: Clock,
        used: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._subscription_id = subscription_id
        self._clock = clock
        self._used = used

    async def _check_key(self, key: str) -> None:
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
            raise ValueError(f"a state key is a string of 1 to {MAX_KEY_LENGTH} characters")
        if self._used is not None:
            used, self._used = self._used, None
            await used()

    async def get(self, key: str) -> str | None:
        await self._check_key(key)
        return await self._store.state_get(self._subscription_id, key, now=self._clock.now())

    async def set(self, key: str, value: str, *, ttl: timedelta | float | None = None) -> None:
        await self._check_key(key)
        if not isinstance(value, str) or len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_LENGTH:
            raise ValueError(f"a state value is a string of at most {MAX_VALUE_LENGTH} bytes in UTF-8")
        if isinstance(ttl, int | float) and not isinstance(ttl, bool):
            ttl = timedelta(seconds=ttl)
        if ttl is not None and (not isinstance(ttl, timedelta) or ttl <= timedelta(0)):
            raise ValueError("ttl must be a positive timedelta or number of seconds")
        now = self._clock.now()
        stored = await self._store.state_set(
            self._subscription_id, key, value, expires_at=now + ttl if ttl is not None else None, now=now
        )
        if not stored:
            raise ValueError(f"the subscription's state holds {MAX_KEYS} keys already: delete one first")

    async def delete(self, key: str) -> None:
        await self._check_key(key)
        await self._store.state_delete(self._subscription_id, key)


def _masked(value: object) -> str:
    """A secret option as it is shown: `***`, nothing of it. Unlike a webhook's header values, a plugin's
    credentials (API keys, refresh tokens) may be short or structured, and no tail of them is safe to show."""
    return "***"


class DestinationKind:
    """One plugin destination, served as a subscription kind of the same name."""

    def __init__(
        self, destination: Destination, plugins: Plugins, client: EgressClient, state: StateStore, clock: Clock
    ) -> None:
        self.destination = destination
        self.name = destination.name
        self._plugins = plugins
        self._client = client
        self._state = state
        self._clock = clock
        self.secret_options = frozenset(str(n) for n in getattr(destination, "secret_options", ()) or ())
        self.default_max_concurrency = int(_bounded(getattr(destination, "default_max_concurrency", 10), 1, 100, 10))
        self.timeout = float(_bounded(getattr(destination, "timeout", DEFAULT_TIMEOUT), 1, MAX_TIMEOUT, 30))
        self._rates: dict[str, tuple[datetime | None, tuple[str, float] | None]] = {}
        self._scope_users: set[tuple[str, str]] = set()  # (scope key, subscription id) recorded in the store

    async def prepare(
        self, options: Mapping[str, object], *, existing: Subscription | None, now: datetime
    ) -> PreparedOptions:
        given = dict(options)
        if existing is not None:
            # Credentials are never shown back, so an update that does not repeat them keeps them (null removes).
            for name in self.secret_options:
                if name not in given and name in existing.secrets:
                    given[name] = existing.secrets[name]
        given = {k: v for k, v in given.items() if v is not None}
        try:
            validated = self.destination.validate_options(given)
        except EventBusError:
            raise
        except Exception as exc:  # a plugin bug is not the caller's bad input, but it must not pass as valid
            log.exception("destination_validate_failed", destination=self.name)
            raise InvalidArgumentError.for_field(
                "options", f"destination {self.name!r} failed to check them: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(validated, Mapping):
            raise InvalidArgumentError.for_field("options", f"destination {self.name!r} returned no options")
        stored = {str(k): v for k, v in validated.items() if k not in self.secret_options}
        secrets = {str(k): v for k, v in validated.items() if k in self.secret_options}
        return PreparedOptions(options=stored, secrets=secrets, revealed={})

    def describe(self, subscription: Subscription) -> dict[str, object]:
        shown = dict(subscription.options)
        shown.update({name: _masked(value) for name, value in subscription.secrets.items()})
        return shown

    def attempt_timeout(self, subscription: Subscription) -> timedelta:
        return timedelta(seconds=self.timeout)

    def _options(self, subscription: Subscription) -> Mapping[str, object]:
        return MappingProxyType({**subscription.options, **subscription.secrets})

    def shared_rate_limit(self, subscription: Subscription) -> tuple[str, float] | None:
        cached = self._rates.get(subscription.id)
        if cached is not None and cached[0] == subscription.updated_at:
            return cached[1]
        limit: tuple[str, float] | None = None
        rate_limit = getattr(self.destination, "rate_limit", None)
        if callable(rate_limit):
            try:
                found = rate_limit(self._options(subscription))
                if found is not None:
                    limit = (str(found.key), float(found.per_second))
            except Exception:  # contained: the subscription is sent without the shared limit, and it is logged
                log.exception("destination_rate_limit_failed", destination=self.name, subscription_id=subscription.id)
        if len(self._rates) > 10_000:
            self._rates.clear()
        self._rates[subscription.id] = (subscription.updated_at, limit)
        return limit

    def _scope_state(self, scope: str, subscription_id: str) -> StoredState:
        """A shared scope's state, kept under "<kind>/<scope>" where a subscription's is under its id (the two
        never meet); the first use by a subscription in this process records it as a user of the scope."""
        key = f"{self.name}/{scope}"
        if (key, subscription_id) in self._scope_users:
            return StoredState(self._state, key, self._clock)

        async def used() -> None:
            await self._state.state_use(key, subscription_id)
            if len(self._scope_users) > 100_000:
                self._scope_users.clear()
            self._scope_users.add((key, subscription_id))

        return StoredState(self._state, key, self._clock, used)

    async def send(self, subscription: Subscription, delivery: LeasedDelivery, *, now: datetime) -> SendResult:
        context = DestinationContext(
            client=self._client,
            options=self._options(subscription),
            state=StoredState(self._state, subscription.id, self._clock),
            now=now,
            subscription_id=subscription.id,
            deadline=self.timeout,
            scopes=lambda scope: self._scope_state(scope, subscription.id),
        )
        handed = Delivery(
            delivery_id=delivery.delivery_id,
            subscription_id=subscription.id,
            event=delivery.event,
            attempt=delivery.attempt,
            first_attempt_at=delivery.first_attempt_at,
        )
        try:
            async with asyncio.timeout(self.timeout):
                result = await self._plugins.call_destination(self.destination, handed, context)
        except TimeoutError:
            return SendResult(
                SendVerdict.RETRY,
                error_class="timeout",
                error=f"destination {self.name!r} did not finish within {self.timeout:g}s",
                slow_failure=True,
            )
        if isinstance(result, PluginFailure):
            return SendResult(SendVerdict.RETRY, error_class="plugin", error=result.message)
        return _send_result(result)


def _send_result(result: DestinationResult) -> SendResult:
    response = result.response
    headers = response.headers if response is not None else ()
    body = response.body[:RESPONSE_EXCERPT] if response is not None else b""
    if result.outcome is Outcome.SUCCESS:
        return SendResult(
            SendVerdict.SUCCESS, status_code=result.status_code, response_headers=headers, response_body=body
        )
    error = result.reason or (f"HTTP {result.status_code}" if result.status_code is not None else None)
    if result.outcome is Outcome.REJECT:
        return SendResult(
            SendVerdict.REJECT,
            status_code=result.status_code,
            error_class=result.error_class or "rejected",
            error=error,
            response_headers=headers,
            response_body=body,
        )
    return SendResult(
        SendVerdict.RETRY,
        status_code=result.status_code,
        error_class=result.error_class,
        error=error,
        response_headers=headers,
        response_body=body,
        retry_after=result.retry_after,
        slow_failure=result.status_code == 429 or result.error_class in ("timeout", "rate_limited"),
        alert=result.alert,
    )


def _bounded(value: object, low: float, high: float, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return min(max(value, low), high)

"""RD Station OAuth2 access tokens: kept in a state shared by the subscriptions of one authorization, refreshed
once at a time, rotations kept.

The state is the destination kind's shared state of scope `oauth-<fingerprint>`, where the fingerprint is a
digest of (base_url, client_id, the options' refresh_token): every subscription created from one authorization
shares one token chain, in every process, so a refresh token RD retires on use never strands another
subscription. It holds one JSON value under `oauth`: `access_token`, `expires_at`, `refresh_at` (when to refresh
before it expires), `refresh_token` (the latest one RD issued: a refresh may return a new one and retire the
old), and `source`, the fingerprint again. An operator who puts a new `refresh_token` (or client) in the
options starts a new chain under a new scope.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from eventbus.plugin.destinations import (
    DestinationContext,
    DestinationResult,
    HttpError,
    HttpResponse,
    KeyValueState,
)
from eventbus_rdstation.rd_errors import describe, error_types, rate_limit_delay

__all__ = [
    "STATE_KEY",
    "AccessToken",
    "Credentials",
    "StoredTokens",
    "TokenKeeper",
    "load_tokens",
    "scrub",
    "token_state",
]

log = structlog.get_logger("eventbus_rdstation")

STATE_KEY = "oauth"
DEFAULT_EXPIRES_IN = 86_400  # what RD documents for its access tokens
MAX_REFRESH_MARGIN = timedelta(minutes=5)
# How long a refused refresh waits for another process's rotation to reach the store before it alerts, and how often
# it looks. The winner stores right after RD's answer, so a second or two is ample; a revoked token costs only this.
RACE_WAIT = 2.0
RACE_POLL = 0.05
# Answers of /auth/token that say the credentials themselves were refused (specs.md §3.1-3.2).
_REFUSAL_TYPES = frozenset({"INVALID_REFRESH_TOKEN", "EXPIRED_CODE_GRANT", "ACCESS_DENIED", "UNAUTHORIZED"})


@dataclass(frozen=True, slots=True)
class Credentials:
    """An RD app's client and the refresh token an authorization gave it (from the subscription's options)."""

    base_url: str
    client_id: str
    client_secret: str
    refresh_token: str

    @property
    def fingerprint(self) -> str:
        """Which options a stored token chain came from: a digest, never the secrets themselves."""
        text = f"{self.base_url}\n{self.client_id}\n{self.refresh_token}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class StoredTokens:
    access_token: str
    expires_at: datetime
    refresh_at: datetime
    refresh_token: str
    source: str

    def usable(self, now: datetime) -> bool:
        return now < self.refresh_at

    def dumps(self) -> str:
        return json.dumps(
            {
                "access_token": self.access_token,
                "expires_at": self.expires_at.isoformat(),
                "refresh_at": self.refresh_at.isoformat(),
                "refresh_token": self.refresh_token,
                "source": self.source,
            }
        )


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A token to send with; `refreshed` when it came from a refresh during this attempt (no second one then)."""

    value: str
    refreshed: bool


@dataclass(frozen=True, slots=True)
class _Refused:
    """/auth/token refused `refresh_token` or the client: only the operator can fix that (or another process)."""

    response: HttpResponse
    refresh_token: str


def token_state(context: DestinationContext, credentials: Credentials) -> KeyValueState:
    """Where the token chain of these credentials is kept: shared by every subscription that uses them."""
    return context.shared_state(f"oauth-{credentials.fingerprint}")


async def load_tokens(context: DestinationContext, credentials: Credentials) -> StoredTokens | None:
    """The stored chain, or None when absent, unreadable or started from other options than the current ones."""
    text = await token_state(context, credentials).get(STATE_KEY)
    if text is None:
        return None
    try:
        stored = json.loads(text)
        tokens = StoredTokens(
            access_token=str(stored["access_token"]),
            expires_at=datetime.fromisoformat(stored["expires_at"]),
            refresh_at=datetime.fromisoformat(stored["refresh_at"]),
            refresh_token=str(stored["refresh_token"]),
            source=str(stored["source"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return tokens if tokens.source == credentials.fingerprint else None


class TokenKeeper:
    """Access tokens for every OAuth subscription of one destination instance (one per process)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        # The exchange running for each chain (by credentials fingerprint). It outlives a caller that is cancelled
        # (the attempt's deadline), and the next refresh of that chain waits for it instead of starting another.
        self._inflight: dict[str, _Exchange] = {}

    async def access_token(
        self,
        credentials: Credentials,
        context: DestinationContext,
        *,
        budget: float,
    ) -> AccessToken | DestinationResult:
        """The stored token while it is fresh; a refreshed one otherwise (or why none could be had)."""
        stored = await load_tokens(context, credentials)
        if stored is not None and stored.usable(context.now):
            return AccessToken(stored.access_token, refreshed=False)
        return await self.refresh(credentials, context, failed=None, budget=budget)

    async def refresh(
        self,
        credentials: Credentials,
        context: DestinationContext,
        *,
        failed: str | None,
        budget: float,
    ) -> AccessToken | DestinationResult:
        """A new access token; `failed` is the token RD just refused (None: there was no usable one).

        Concurrent deliveries of the subscriptions sharing these credentials wait on one lock; whoever gets it
        second finds the token the first one stored and uses it. An exchange whose caller was cancelled goes on,
        and whoever gets the lock next takes its answer rather than sending the same refresh token again. A
        refresh RD refuses may mean another process rotated the refresh token meanwhile: the state is read once
        more before giving up, for a short while (`RACE_WAIT`): the other process may have had RD's answer, which
        retired our refresh token, but not yet stored it.
        """
        lock = self._locks.setdefault(credentials.fingerprint, asyncio.Lock())
        async with lock:
            current: StoredTokens | None = None
            running = self._inflight.get(credentials.fingerprint)
            if running is not None:
                outcome = await self._join(running)
            else:
                current = await load_tokens(context, credentials)
                if current is not None and current.access_token != failed and current.usable(context.now):
                    return AccessToken(current.access_token, refreshed=True)
                used = current.refresh_token if current is not None else credentials.refresh_token
                outcome = await self._exchange(credentials, context, used, budget)
            if isinstance(outcome, _Refused):
                seen = {failed, current.access_token if current is not None else None}
                again = await _newer_tokens(context, credentials, outcome.refresh_token, seen, budget)
                if again is not None and again.access_token not in seen and again.usable(context.now):
                    return AccessToken(again.access_token, refreshed=True)
                if again is not None and again.refresh_token != outcome.refresh_token:
                    outcome = await self._exchange(credentials, context, again.refresh_token, budget)
            if isinstance(outcome, _Refused):
                why = describe(outcome.response.status, outcome.response.body)
                return DestinationResult.retry(
                    f"RD Station refused the OAuth refresh token ({why}): authorize the app again and update the "
                    "subscription's refresh_token (and check client_id and client_secret)",
                    response=outcome.response,
                    error_class="auth",
                    alert=True,
                )
            if isinstance(outcome, DestinationResult):
                return outcome
            return AccessToken(outcome, refreshed=True)

    async def _exchange(
        self, credentials: Credentials, context: DestinationContext, refresh_token: str, budget: float
    ) -> _Outcome:
        # Shielded: once RD has rotated the refresh token, the new one must reach the state even if this attempt is
        # cancelled (its deadline), or the chain is lost and only a new authorization brings it back.
        exchange = _Exchange(secrets=[credentials.client_secret, credentials.refresh_token, refresh_token])
        exchange.task = asyncio.ensure_future(
            self._exchange_and_store(credentials, context, refresh_token, budget, exchange.secrets)
        )
        self._inflight[credentials.fingerprint] = exchange
        exchange.task.add_done_callback(_forget(self._inflight, credentials.fingerprint, exchange))
        return await self._join(exchange)

    async def _join(self, exchange: _Exchange) -> _Outcome:
        assert exchange.task is not None
        try:
            return await asyncio.shield(exchange.task)
        except asyncio.CancelledError:
            exchange.orphaned |= not exchange.task.done()
            raise

    async def _exchange_and_store(
        self,
        credentials: Credentials,
        context: DestinationContext,
        refresh_token: str,
        budget: float,
        issued: list[str],
    ) -> _Outcome:
        grant = {
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
            "refresh_token": refresh_token,
        }
        try:
            response = await context.request(
                "POST", f"{credentials.base_url}/auth/token", json_body=grant, timeout=budget
            )
        except HttpError as exc:
            return DestinationResult.retry(
                f"no answer from RD Station's token endpoint: {exc.message}", error_class=exc.error_class
            )
        status = response.status
        if 200 <= status < 300:
            # Never handed on as `response=`: the body holds the new tokens, and the attempt log keeps bodies.
            answer = _token_answer(response.body)
            if answer is None:
                return DestinationResult.retry(
                    f"RD Station's token endpoint answered HTTP {status} without an access_token", error_class="server"
                )
            access_token, expires_in, new_refresh_token = answer
            issued.extend(token for token in (access_token, new_refresh_token) if token)  # never in a log line
            lifetime = timedelta(seconds=expires_in)
            tokens = StoredTokens(
                access_token=access_token,
                expires_at=context.now + lifetime,
                refresh_at=context.now + lifetime - min(MAX_REFRESH_MARGIN, lifetime / 10),
                refresh_token=new_refresh_token or refresh_token,
                source=credentials.fingerprint,
            )
            await token_state(context, credentials).set(STATE_KEY, tokens.dumps())
            return access_token
        if status in (400, 401, 403) or error_types(response.body) & _REFUSAL_TYPES:
            return _Refused(response, refresh_token)
        why = f"RD Station's token endpoint answered {describe(status, response.body)}"
        if status == 429:
            delay = rate_limit_delay(response, context.now)
            return DestinationResult.retry(why, delay=delay, response=response, error_class="rate_limited")
        return DestinationResult.retry(why, response=response, error_class="server")


async def _newer_tokens(
    context: DestinationContext, credentials: Credentials, refused: str, seen: set[str | None], budget: float
) -> StoredTokens | None:
    """After RD refused `refused`: the chain another process stored meanwhile (a usable access token this attempt
    has not seen, or another refresh token), waiting up to `RACE_WAIT` for it; else what the state holds.

    RD retires a refresh token when it answers the exchange that used it, so a process that lost the race gets
    its refusal while the winner may still be on its way to the store. Polled: processes share nothing else.
    """
    deadline = asyncio.get_running_loop().time() + min(RACE_WAIT, budget / 4)
    while True:
        stored = await load_tokens(context, credentials)
        newer = stored is not None and (
            stored.refresh_token != refused or (stored.access_token not in seen and stored.usable(context.now))
        )
        if newer or asyncio.get_running_loop().time() >= deadline:
            return stored
        await asyncio.sleep(RACE_POLL)


def _token_answer(body: bytes) -> tuple[str, float, str | None] | None:
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str) or not answer["access_token"]:
        return None
    expires_in = answer.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not 0 < expires_in < 10**8:
        expires_in = DEFAULT_EXPIRES_IN
    refresh_token = answer.get("refresh_token")
    return (
        answer["access_token"],
        float(expires_in),
        refresh_token if isinstance(refresh_token, str) and refresh_token else None,
    )


_Outcome = str | _Refused | DestinationResult


@dataclass(eq=False, slots=True)
class _Exchange:
    """One refresh-token exchange of a chain: its task, whether its caller was cancelled while it ran, and the
    tokens it involves (scrubbed from what is logged about it)."""

    secrets: list[str]
    task: asyncio.Task[_Outcome] | None = None
    orphaned: bool = False


def _forget(inflight: dict[str, _Exchange], fingerprint: str, exchange: _Exchange) -> Callable[[object], None]:
    """Drop the finished exchange; log a failure nobody was left to see (its caller was cancelled)."""

    def done(_: object) -> None:
        if inflight.get(fingerprint) is exchange:
            del inflight[fingerprint]
        task = exchange.task
        if task is None or task.cancelled():
            return
        error = task.exception()  # retrieved either way, so an exchange whose caller was cancelled does not warn
        if not exchange.orphaned:
            return
        if error is not None:
            problem = f"{type(error).__name__}: {error}"
        else:
            outcome = task.result()
            if isinstance(outcome, str):
                return
            if isinstance(outcome, _Refused):
                problem = "refused: " + describe(outcome.response.status, outcome.response.body)
            else:
                problem = outcome.reason or "failed"
        log.warning("rdstation_token_exchange_failed", error=scrub(problem, exchange.secrets))

    return done


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with each secret, plain or URL-quoted, replaced by `***`."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***").replace(urllib.parse.quote(secret, safe=""), "***")
    return text

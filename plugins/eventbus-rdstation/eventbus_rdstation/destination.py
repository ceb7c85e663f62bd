"""The `rdstation` destination: each delivered event becomes an RD Station event (a conversion, a sale...).

With an API key it posts conversions to `/platform/conversions`; with an OAuth2 app it posts any event type to
`/platform/events`, keeping the access token (and the rotated refresh token) in a state shared by the
subscriptions of one authorization (`oauth.py`).
RD's answers map to results: 2xx with RD's `event_uuid` success; a refused event (400, 409, 413, 422 with an RD
error body) is rejected with RD's reason; a 2xx without `event_uuid`, or a refusal without an RD error (a proxy's
page), retries with an alert (`endpoint`); 401/403 retry with an alert (credentials or plan); 429 retries after
RD's delay; 5xx and the rest retry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import re
import time
import urllib.parse
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass

from eventbus.errors import InvalidArgumentError
from eventbus.plugin.destinations import (
    Delivery,
    DestinationContext,
    DestinationResult,
    HttpError,
    HttpResponse,
    RateLimit,
)
from eventbus_rdstation.mapping import Mapping, MappingError
from eventbus_rdstation.oauth import Credentials, TokenKeeper, load_tokens, scrub
from eventbus_rdstation.rd_errors import describe, parse_errors, rate_limit_delay, retry_after

__all__ = ["DEFAULT_BASE_URL", "MAX_BODY_BYTES", "OPTIONS", "RDStationDestination", "Settings"]

DEFAULT_BASE_URL = "https://api.rd.services"
# RD's per-account figure for contacts on the Light, Basic and Pro plans (specs.md §3.3); for events unconfirmed.
DEFAULT_RATE_PER_MINUTE = 120
MAX_RATE_PER_MINUTE = 10_000
MAX_BODY_BYTES = 200_000  # "0.2 MB", RD's documented request body limit
OPTIONS = (
    "base_url",
    "api_key",
    "client_id",
    "client_secret",
    "refresh_token",
    "mapping",
    "rate_limit_per_minute",
    "account",
)
_OAUTH = ("client_id", "client_secret", "refresh_token")
_MAX_CREDENTIAL = 4096
_ACCOUNT = re.compile(r"[A-Za-z0-9._@-]{1,100}")
_LOOPBACK_NAMES = frozenset({"localhost"})
# RD refused this event and explained why (an RD error body): retrying the same body cannot help.
_REJECTED = frozenset({400, 409, 413, 422})
# Rejected only when RD explains them (an error_type); bare, they say the URL or protocol is wrong, not the event.
_REJECTED_WHEN_EXPLAINED = frozenset({404, 405, 406, 415})


@dataclass(frozen=True, slots=True)
class Settings:
    """A subscription's options, checked: where to send, with which credentials, and how to map events."""

    base_url: str
    mapping: Mapping
    rate_limit_per_minute: int
    api_key: str | None = None
    oauth: Credentials | None = None
    account: str | None = None

    @classmethod
    def parse(cls, options: AnyMapping[str, object]) -> Settings:
        """Check every option; a bad one raises `InvalidArgumentError` naming `options.<key>`."""
        for key in options:
            if key not in OPTIONS:
                raise _bad(key, f"unknown option; the rdstation destination takes {', '.join(OPTIONS)}")
        base_url = _base_url(options.get("base_url", DEFAULT_BASE_URL))
        if "mapping" not in options:
            raise _bad("mapping", 'required: {"event_type": "CONVERSION", "payload": {"email": "$.data.email", ...}}')
        mapping = Mapping.parse(options["mapping"], "options.mapping")
        rate = _rate(options.get("rate_limit_per_minute", DEFAULT_RATE_PER_MINUTE))
        account = _account(options.get("account"))
        api_key = _credential(options, "api_key")
        given = [name for name in _OAUTH if options.get(name) is not None]
        if api_key is not None:
            if given:
                raise _bad("api_key", f"give api_key or the OAuth2 client ({', '.join(_OAUTH)}), not both")
            if mapping.event_type != "CONVERSION":
                raise _bad(
                    "mapping.event_type",
                    f"an API key only sends CONVERSION events; {mapping.event_type} needs the OAuth2 client "
                    "(client_id, client_secret, refresh_token)",
                )
            return cls(base_url, mapping, rate, api_key=api_key, account=account)
        if not given:
            raise InvalidArgumentError.for_field(
                "options",
                "credentials required: api_key (conversions only) or client_id, client_secret and refresh_token",
            )
        for name in _OAUTH:
            if name not in given:
                raise _bad(name, f"required with {', '.join(given)}: OAuth2 needs {', '.join(_OAUTH)}")
        client_id, client_secret, refresh_token = (_credential(options, name) or "" for name in _OAUTH)
        credentials = Credentials(base_url, client_id, client_secret, refresh_token)
        return cls(base_url, mapping, rate, oauth=credentials, account=account)

    def options(self) -> dict[str, object]:
        result: dict[str, object] = {
            "base_url": self.base_url,
            "mapping": self.mapping.options(),
            "rate_limit_per_minute": self.rate_limit_per_minute,
        }
        if self.account is not None:
            result["account"] = self.account
        if self.api_key is not None:
            result["api_key"] = self.api_key
        if self.oauth is not None:
            result.update(
                client_id=self.oauth.client_id,
                client_secret=self.oauth.client_secret,
                refresh_token=self.oauth.refresh_token,
            )
        return result

    @property
    def account_key(self) -> str:
        """The RD account the rate is shared by: a digest, never a credential in clear.

        With `account`, (base_url, account): every subscription labelled with it shares one budget, whatever its
        credentials. Without, the credentials stand for the account: (base_url, api_key), or for OAuth the
        authorization (base_url, client_id, the option refresh_token), since one app may be authorized by many
        customers' accounts, which must not throttle each other.
        """
        if self.account is not None:
            parts: tuple[str, ...] = ("account", self.base_url, self.account)
        elif self.api_key is not None:
            parts = ("api_key", self.base_url, self.api_key)
        elif self.oauth is not None:
            parts = ("oauth", self.base_url, self.oauth.client_id, self.oauth.refresh_token)
        else:
            parts = ("none", self.base_url)
        return "rdstation:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

    @property
    def secrets(self) -> tuple[str, ...]:
        if self.api_key is not None:
            return (self.api_key,)
        return (self.oauth.client_secret, self.oauth.refresh_token) if self.oauth else ()


class RDStationDestination:
    """Sends events to RD Station Marketing as conversions (API key) or any CDP event (OAuth2)."""

    name = "rdstation"
    secret_options = frozenset({"api_key", "client_secret", "refresh_token"})
    timeout = 30.0
    default_max_concurrency = 4

    def __init__(self) -> None:
        self._tokens = TokenKeeper()

    def validate_options(self, options: AnyMapping[str, object]) -> dict[str, object]:
        return Settings.parse(options).options()

    def rate_limit(self, options: AnyMapping[str, object]) -> RateLimit:
        settings = Settings.parse(options)
        return RateLimit(settings.account_key, settings.rate_limit_per_minute / 60)

    async def deliver(self, delivery: Delivery, context: DestinationContext) -> DestinationResult:
        try:
            settings = Settings.parse(context.options)
        except InvalidArgumentError as exc:
            return DestinationResult.retry(
                f"the subscription's options do not validate any more: {exc.message}", error_class="config", alert=True
            )
        used: list[str] = []  # the access tokens this attempt sent
        result = await self._deliver(settings, delivery, context, used)
        if result.reason is None:
            return result
        secrets = [*settings.secrets, *used]
        if settings.oauth is not None:
            # The chain's current tokens too: RD's answer (or a message quoting it) may echo one.
            try:
                stored = await load_tokens(context, settings.oauth)
            except Exception:  # the store failing now must not turn RD's answer into a plugin failure
                stored = None
            if stored is not None:
                secrets += (stored.access_token, stored.refresh_token)
        return _scrubbed(result, secrets)

    async def _deliver(
        self, settings: Settings, delivery: Delivery, context: DestinationContext, used: list[str]
    ) -> DestinationResult:
        payload = settings.mapping.build(delivery.event.event)
        if isinstance(payload, MappingError):
            return DestinationResult.reject(
                f"the event does not map to an RD event: {payload.reason}", error_class="mapping"
            )
        envelope = {"event_type": settings.mapping.event_type, "event_family": "CDP", "payload": payload}
        try:
            body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except ValueError:  # NaN or an infinity, which JSON cannot carry (a valid event never holds one)
            return DestinationResult.reject(
                "the RD event holds a number JSON cannot carry (NaN or an infinity): RD Station would refuse it",
                error_class="mapping",
            )
        if len(body) > MAX_BODY_BYTES:
            return DestinationResult.reject(
                f"the RD event is {len(body)} bytes; RD Station accepts at most {MAX_BODY_BYTES} (0.2 MB)",
                error_class="too_large",
            )
        sender = _Sender(context, body)
        if settings.api_key is not None:
            url = f"{settings.base_url}/platform/conversions?api_key={urllib.parse.quote(settings.api_key, safe='')}"
            response = await sender.post(url, {})
            if isinstance(response, DestinationResult):
                return response
            if response.status == 401:
                return _auth_refused(response, "the API key", "check that it is active in RD Station's App Publisher")
            return _classify(response, context, documented_answer=False)
        assert settings.oauth is not None
        return await self._send_event(settings.oauth, sender, context, used)

    async def _send_event(
        self, credentials: Credentials, sender: _Sender, context: DestinationContext, used: list[str]
    ) -> DestinationResult:
        url = f"{credentials.base_url}/platform/events"
        token = await self._tokens.access_token(credentials, context, budget=sender.remaining())
        if isinstance(token, DestinationResult):
            return token
        used.append(token.value)
        response = await sender.post(url, {"Authorization": f"Bearer {token.value}"})
        if isinstance(response, DestinationResult):
            return response
        if response.status == 401 and not token.refreshed:
            # Expired (`WWW-Authenticate: ... error="expired_token"`) or revoked: one refresh, one more try.
            token = await self._tokens.refresh(credentials, context, failed=token.value, budget=sender.remaining())
            if isinstance(token, DestinationResult):
                return token
            used.append(token.value)
            response = await sender.post(url, {"Authorization": f"Bearer {token.value}"})
            if isinstance(response, DestinationResult):
                return response
        if response.status == 401:
            return _auth_refused(
                response, "a freshly refreshed access token", "check the app's authorization and the account"
            )
        return _classify(response, context, documented_answer=True)


class _Sender:
    """Posts the one encoded body, each request within what is left of the attempt's deadline."""

    def __init__(self, context: DestinationContext, body: bytes) -> None:
        self._context = context
        self._body = body
        self._started = time.monotonic()

    def remaining(self) -> float:
        return max(0.1, self._context.deadline - (time.monotonic() - self._started))

    async def post(self, url: str, headers: dict[str, str]) -> HttpResponse | DestinationResult:
        headers = {**headers, "Content-Type": "application/json", "Accept": "application/json"}
        try:
            return await self._context.request("POST", url, body=self._body, headers=headers, timeout=self.remaining())
        except HttpError as exc:
            # Caught rather than left to the core: the same retry, with the reason scrubbed of credentials.
            return DestinationResult.retry(f"no answer from RD Station: {exc.message}", error_class=exc.error_class)


def _classify(response: HttpResponse, context: DestinationContext, *, documented_answer: bool) -> DestinationResult:
    """`documented_answer`: RD documents this endpoint's 2xx body (`/platform/events`: `{"event_uuid": ...}`).
    For `/platform/conversions` it is not confirmed, so there only a 2xx that is clearly not RD's (a body that is
    not JSON: a proxy's HTML page) is retried; an empty body or any JSON object counts as sent, since sending an
    accepted conversion again would fire the account's automations twice."""
    status = response.status
    if 200 <= status < 300:
        if _has_event_uuid(response.body) or (not documented_answer and _plausibly_rd(response.body)):
            return DestinationResult.success(response=response)
        # RD answers every accepted event with its `event_uuid`; a 2xx without one came from something else (a
        # wrong base_url, a proxy's page), so counting it as sent would lose the event without a word.
        return DestinationResult.retry(
            f"HTTP {status} {_unlike_rd(response.body)}, not RD Station's event_uuid: check the subscription's "
            "base_url (a proxy or another server answered)",
            response=response,
            error_class="endpoint",
            alert=True,
        )
    why = describe(status, response.body)
    if (status in _REJECTED and parse_errors(response.body)) or (
        status in _REJECTED_WHEN_EXPLAINED and _explained(response)
    ):
        return DestinationResult.reject(
            f"RD Station refused the event: {why}", response=response, error_class="validation"
        )
    if status in _REJECTED or status in _REJECTED_WHEN_EXPLAINED:
        # No RD error in the body (an HTML page from a firewall or proxy, an empty body): nothing says the event
        # is wrong, so rejecting it for good could lose a valid one. Retried, and the operator told at once.
        return DestinationResult.retry(
            f"RD Station answered {why}: check the subscription's base_url (a proxy or firewall may be answering)",
            response=response,
            error_class="endpoint",
            alert=True,
        )
    if status == 403:
        # ACCESS_DENIED: the account's plan or the app's permissions. Retried (not rejected) so nothing is lost
        # while the operator fixes it; the alert says so at once.
        return DestinationResult.retry(
            f"RD Station denied access ({why}): the account's plan or the app's permissions must allow this event",
            response=response,
            error_class="forbidden",
            alert=True,
        )
    if status == 429:
        delay = rate_limit_delay(response, context.now)
        return DestinationResult.retry(
            f"RD Station's rate limit ({why})", delay=delay, response=response, error_class="rate_limited"
        )
    asked = retry_after(response, context.now)
    error_class = "server" if status >= 500 else "http"
    return DestinationResult.retry(
        f"RD Station answered {why}", delay=asked, response=response, error_class=error_class
    )


def _has_event_uuid(body: bytes) -> bool:
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(answer, dict) and isinstance(answer.get("event_uuid"), str) and bool(answer["event_uuid"])


def _plausibly_rd(body: bytes) -> bool:
    """An empty body or a JSON object: what an API answers, not a proxy's or a captive portal's page."""
    if not body.strip():
        return True
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):
        return False


def _unlike_rd(body: bytes) -> str:
    """What a 2xx body held instead of RD's answer, without quoting it (the attempt keeps the body itself)."""
    if not body.strip():
        return "with an empty body"
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return f"with a body that is not JSON ({len(body)} bytes)"
    return "with a JSON body lacking a string event_uuid"


def _explained(response: HttpResponse) -> bool:
    return any(error.error_type for error in parse_errors(response.body))


def _auth_refused(response: HttpResponse, what: str, hint: str) -> DestinationResult:
    why = describe(response.status, response.body)
    return DestinationResult.retry(
        f"RD Station refused {what} ({why}): {hint}", response=response, error_class="auth", alert=True
    )


def _scrubbed(result: DestinationResult, secrets: list[str]) -> DestinationResult:
    """Credentials and tokens never reach a reason, even if a message somewhere quoted one."""
    if result.reason is None:
        return result
    reason = scrub(result.reason, secrets)
    return result if reason == result.reason else dataclasses.replace(result, reason=reason)


def _bad(key: str, detail: str) -> InvalidArgumentError:
    return InvalidArgumentError.for_field(f"options.{key}", detail)


def _base_url(value: object) -> str:
    if not isinstance(value, str) or not value or any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise _bad("base_url", f"an http(s) URL without spaces, e.g. {DEFAULT_BASE_URL}")
    try:
        parts = urllib.parse.urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise _bad("base_url", f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise _bad("base_url", f"an http(s) URL with a host, e.g. {DEFAULT_BASE_URL}")
    if parts.scheme == "http" and not _loopback(host):
        raise _bad(
            "base_url",
            "https is required: over plain http the credentials and tokens would travel in clear "
            "(http is allowed only to loopback: 127.0.0.0/8, ::1, localhost)",
        )
    if "?" in value or "#" in value:
        raise _bad("base_url", "no query or fragment: the destination adds the API paths itself")
    if parts.username is not None or parts.password is not None:
        raise _bad("base_url", "no user:password@ part: credentials go in api_key or the OAuth2 options")
    return value.rstrip("/")


def _loopback(host: str) -> bool:
    if host.lower().rstrip(".") in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _account(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _ACCOUNT.fullmatch(value):
        raise _bad("account", "a label of 1 to 100 characters of [A-Za-z0-9._@-] naming the RD account")
    return value


def _rate(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())  # `--option rate_limit_per_minute=60` gives a string
    elif isinstance(value, float) and value.is_integer():
        value = int(value)  # a protobuf Struct carries every number as a double
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_RATE_PER_MINUTE:
        raise _bad("rate_limit_per_minute", f"an integer from 1 to {MAX_RATE_PER_MINUTE} (default 120)")
    return value


def _credential(options: AnyMapping[str, object], key: str) -> str | None:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_CREDENTIAL:
        raise _bad(key, f"a non-empty string of at most {_MAX_CREDENTIAL} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise _bad(key, "must not contain spaces or control characters")
    return value

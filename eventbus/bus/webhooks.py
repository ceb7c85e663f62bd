"""The `webhook` kind: an endpoint's options and secrets, and one signed POST per attempt (DESIGN.md §5)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from eventbus.bus.kinds import PreparedOptions, SendResult, SendVerdict
from eventbus.egress.client import EgressClient, EgressError, parse_retry_after
from eventbus.egress.ssrf import DestinationPolicy
from eventbus.egress.webhook_request import PayloadFormat, build_request
from eventbus.errors import InvalidArgumentError
from eventbus.model import format_rfc3339, parse_rfc3339
from eventbus.signing import generate_secret, generate_signing_key, parse_secret, parse_signing_key, public_key_of
from eventbus.store.base import LeasedDelivery, Subscription

DEFAULT_TIMEOUT = 15.0
MAX_TIMEOUT = 60.0
ROTATION_GRACE = timedelta(hours=24)
MAX_HEADERS = 32
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Headers the request itself owns: the body's framing, the format's content type, the signature scheme.
_RESERVED = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection", "user-agent"})
_KNOWN_OPTIONS = frozenset({"url", "headers", "format", "timeout", "secret", "signing_key", "ed25519"})


def _check_headers(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError.for_field("options.headers", "must be an object of header names to values")
    if len(value) > MAX_HEADERS:
        raise InvalidArgumentError.for_field("options.headers", f"{len(value)} headers; at most {MAX_HEADERS}")
    headers: dict[str, str] = {}
    for name, text in value.items():
        field = f"options.headers.{name}"
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise InvalidArgumentError.for_field(field, "not a valid HTTP header name")
        lowered = name.lower()
        if lowered.startswith(("webhook-", "ce-")) or lowered in _RESERVED or lowered in ("traceparent", "tracestate"):
            raise InvalidArgumentError.for_field(field, f"{name} is set by eventbus on every request; it cannot be set")
        if not isinstance(text, str):
            raise InvalidArgumentError.for_field(field, "the value must be a string")
        if any(c in text for c in "\r\n\0") or len(text) > 4096:
            raise InvalidArgumentError.for_field(field, "the value may not contain CR, LF or NUL, nor pass 4096 chars")
        headers[lowered] = text
    return headers


def _check_timeout(value: object) -> float:
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidArgumentError.for_field("options.timeout", "seconds, between 1 and 60")
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidArgumentError.for_field("options.timeout", f"{value!r} is not a number of seconds") from None
    if not 1.0 <= seconds <= MAX_TIMEOUT:
        raise InvalidArgumentError.for_field("options.timeout", f"{seconds:g} s; must be between 1 and 60 seconds")
    return seconds


def _check_format(value: object) -> PayloadFormat:
    try:
        return PayloadFormat(str(value or PayloadFormat.STANDARD))
    except ValueError:
        known = ", ".join(f.value for f in PayloadFormat)
        raise InvalidArgumentError.for_field("options.format", f"{value!r}; use one of {known}") from None


_SENSITIVE = re.compile(r"authorization|cookie|token|secret|key|password|signature|credential", re.IGNORECASE)


def _masked(name: str, value: str) -> str:
    """Header values that look like credentials are shown as their last 4 characters only."""
    if not _SENSITIVE.search(name):
        return value
    return f"***{value[-4:]}" if len(value) > 12 else "***"


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true", "yes"))


def active_secrets(secrets: Mapping[str, object], now: datetime) -> list[str]:
    """The secrets that sign now: the current one and any previous one still inside its rotation grace."""
    keys: list[str] = []
    for entry in _keys(secrets):
        expires = entry.get("expires_at")
        if expires is None or parse_rfc3339(str(expires)) > now:
            keys.append(str(entry["secret"]))
    return keys


def _keys(secrets: Mapping[str, object]) -> list[dict[str, Any]]:
    keys = secrets.get("keys")
    return [k for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []


class WebhookKind:
    """Endpoints: signed HTTP POSTs through the shared, SSRF-guarded client."""

    name = "webhook"
    default_max_concurrency = 10

    def __init__(self, egress: EgressClient, policy: DestinationPolicy) -> None:
        self.egress = egress
        self.policy = policy

    async def prepare(
        self, options: Mapping[str, object], *, existing: Subscription | None, now: datetime
    ) -> PreparedOptions:
        unknown = sorted(set(options) - _KNOWN_OPTIONS)
        if unknown:
            raise InvalidArgumentError.for_field(
                f"options.{unknown[0]}", f"unknown webhook option; known: {', '.join(sorted(_KNOWN_OPTIONS))}"
            )
        url = options.get("url")
        if not isinstance(url, str) or not url:
            raise InvalidArgumentError.for_field("options.url", "the endpoint URL is required")
        await self.policy.check_destination(url, field="options.url")
        stored: dict[str, object] = {
            "url": url,
            "headers": _check_headers(options.get("headers")),
            "format": _check_format(options.get("format")).value,
            "timeout": _check_timeout(options.get("timeout")),
        }
        secrets: dict[str, object] = dict(existing.secrets) if existing is not None else {}
        revealed: dict[str, object] = {}
        secret = options.get("secret")
        if secret is not None:
            if not isinstance(secret, str):
                raise InvalidArgumentError.for_field("options.secret", "a whsec_ secret")
            parse_secret(secret, "options.secret")
            if existing is not None:  # a new secret on a live endpoint is a rotation: the old one keeps signing 24 h
                secrets, _ = self.rotate(existing, secret, now=now)
            else:
                secrets["keys"] = [{"secret": secret, "expires_at": None}]
            revealed["secret"] = secret
        elif not _keys(secrets):
            generated = generate_secret()
            secrets["keys"] = [{"secret": generated, "expires_at": None}]
            revealed["secret"] = generated
        signing_key = options.get("signing_key")
        if signing_key is not None:
            if not isinstance(signing_key, str):
                raise InvalidArgumentError.for_field("options.signing_key", "a whsk_ ed25519 key")
            parse_signing_key(signing_key, "options.signing_key")
            secrets["signing_key"] = signing_key if signing_key.startswith("whsk_") else f"whsk_{signing_key}"
        elif _truthy(options.get("ed25519")) and not secrets.get("signing_key"):
            secrets["signing_key"] = generate_signing_key()
        if secrets.get("signing_key"):
            revealed["public_key"] = public_key_of(str(secrets["signing_key"]))
        return PreparedOptions(options=stored, secrets=secrets, revealed=revealed)

    def rotate(
        self, subscription: Subscription, new_secret: str | None, *, now: datetime
    ) -> tuple[dict[str, object], str]:
        """New secrets: the new one signs from now on, the current one keeps signing for 24 h as well."""
        secret = new_secret or generate_secret()
        parse_secret(secret, "secret")
        current = [k for k in _keys(subscription.secrets) if k.get("expires_at") is None]
        still_valid = [k for k in _keys(subscription.secrets) if k.get("expires_at") is not None]
        still_valid = [k for k in still_valid if parse_rfc3339(str(k["expires_at"])) > now]
        grace_end = format_rfc3339(now + ROTATION_GRACE)
        keys = [{"secret": secret, "expires_at": None}]
        keys += [{"secret": k["secret"], "expires_at": grace_end} for k in current] + still_valid
        return {**subscription.secrets, "keys": keys}, secret

    def describe(self, subscription: Subscription) -> dict[str, object]:
        shown = dict(subscription.options)
        headers = shown.get("headers")
        if isinstance(headers, dict):
            shown["headers"] = {name: _masked(name, str(value)) for name, value in headers.items()}
        signing_key = subscription.secrets.get("signing_key")
        if signing_key:
            shown["public_key"] = public_key_of(str(signing_key))
        grace = [k["expires_at"] for k in _keys(subscription.secrets) if k.get("expires_at") is not None]
        if grace:
            shown["previous_secret_expires_at"] = max(str(g) for g in grace)
        return shown

    def attempt_timeout(self, subscription: Subscription) -> timedelta:
        return timedelta(seconds=float(str(subscription.options.get("timeout", DEFAULT_TIMEOUT))))

    def shared_rate_limit(self, subscription: Subscription) -> tuple[str, float] | None:
        return None  # an endpoint's only limit is its own `rate_limit`

    async def send(self, subscription: Subscription, delivery: LeasedDelivery, *, now: datetime) -> SendResult:
        options = subscription.options
        signing_key = subscription.secrets.get("signing_key")
        headers = options.get("headers")
        request = build_request(
            delivery.event,
            payload_format=PayloadFormat(str(options.get("format", "standard"))),
            timestamp=int(now.timestamp()),
            secrets=active_secrets(subscription.secrets, now),
            signing_key=str(signing_key) if signing_key else None,
            extra_headers=headers if isinstance(headers, dict) else {},
        )
        try:
            response = await self.egress.post(
                str(options["url"]),
                request.body,
                request.headers,
                timeout=self.attempt_timeout(subscription).total_seconds(),
            )
        except EgressError as exc:
            return SendResult(
                SendVerdict.RETRY,
                error_class=exc.error_class,
                error=exc.message,
                slow_failure=exc.error_class == "timeout",
            )
        status = response.status
        retry_after = parse_retry_after(next((v for k, v in response.headers if k.lower() == "retry-after"), None), now)
        if 200 <= status < 300:
            verdict = SendVerdict.SUCCESS
        elif status == 410:
            verdict = SendVerdict.GONE
        else:
            verdict = SendVerdict.RETRY  # 3xx included: redirects are not followed
        return SendResult(
            verdict,
            status_code=status,
            response_headers=response.headers,
            response_body=response.body,
            retry_after=retry_after if verdict is SendVerdict.RETRY else None,
            slow_failure=status == 429,
            error=None if verdict is SendVerdict.SUCCESS else f"HTTP {status}",
        )

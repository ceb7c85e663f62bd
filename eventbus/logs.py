"""structlog set-up: pretty console on a terminal, one JSON object per line otherwise, context merged first, secrets
scrubbed last; the correlation helpers the transports and the dispatcher bind their ids with."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
REDACTED = "[redacted]"
MAX_REQUEST_ID = 128
# A caller's X-Request-Id / x-request-id is kept when it is short and printable ASCII without spaces (it lands in
# every log line and goes back out as a header); anything else is replaced by a generated one.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# Most event ids listed on one line: a batch of 1000 would make every line of its request a page long.
MAX_LOGGED_EVENT_IDS = 10

# Keys whose values are credentials whatever they hold (compared lower-cased, `-` read as `_`).
_SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "api_key",
        "apikey",
        "x_api_key",
        "cookie",
        "set_cookie",
        "password",
        "passwd",
        "secret",
        "secrets",
        "token",
        "signing_key",
        "private_key",
        "webhook_signature",
        "x_hub_signature",
        "x_hub_signature_256",
        "stripe_signature",
        "x_shopify_hmac_sha256",
        "x_slack_signature",
        "x_signature",
        "signature",
    }
)
_SECRET_SUFFIXES = ("_secret", "_token", "_password", "_signature", "_api_key")
# Credentials recognisable by their shape, wherever they appear in a value (an error message, a URL, a traceback):
# our API keys and signing secrets, bearer tokens, signature headers' values, and credential query parameters.
_SECRET_TEXT = re.compile(
    r"(?P<prefix>ebk_|whsec_|whsk_)[A-Za-z0-9_+/=-]+"
    r"|(?P<bearer>\b[Bb]earer\s+)[^\s\"',;]+"
    r"|(?P<signed>\bv1a?,|\bsha(?:1|256|512)=|\bv[01]=)[A-Za-z0-9+/=]{16,}"
    r"|(?P<query>[?&;](?:access_token|refresh_token|id_token|token|api_key|apikey|key|secret|signature|sig|password"
    r"|code|auth)=)[^&\s#\"']+",
    re.IGNORECASE,
)


def _scrub_match(match: re.Match[str]) -> str:
    kept = match.group("prefix") or match.group("bearer") or match.group("signed") or match.group("query") or ""
    return kept + REDACTED


def scrub_text(text: str) -> str:
    """`text` with every credential-shaped part replaced."""
    return _SECRET_TEXT.sub(_scrub_match, text)


def _is_secret_key(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return name in _SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def _scrub(value: object, depth: int = 0) -> object:
    if isinstance(value, str):
        return scrub_text(value)
    if depth > 4:  # a log value is never this deep; bounded so a cycle cannot hang a log call
        return value
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _is_secret_key(k) else _scrub(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v, depth + 1) for v in value]
    return value


def redact_secrets(logger: object, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor, defense in depth: nothing should log a credential in the first place, but a key named
    like one is blanked and a value shaped like one (ebk_, whsec_, Bearer, signatures, ?token=) is scrubbed."""
    for key, value in event_dict.items():
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            if value:
                event_dict[key] = scrub_text(value)
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = _scrub(value)
    return event_dict


class RedactingFilter(logging.Filter):
    """The same scrubbing for the standard library's records (aiohttp's and grpc's own error lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = scrub_text(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


def processors(log_format: str) -> list[structlog.typing.Processor]:
    """The processor chain of `log_format` ("console" or "json"): context first, secrets scrubbed just before
    rendering (tests capture exactly what `eventbus serve` writes with it)."""
    renderer: structlog.typing.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks rendered to text before the scrubber, in both formats: a traceback can quote a secret.
        structlog.processors.format_exc_info,
        redact_secrets,
        renderer,
    ]


def configure_logging(log_format: str | None = None, level: str = "info") -> None:
    """`log_format`: "console", "json", or None to choose by whether stderr is a terminal. Logs go to stderr."""
    if log_format is None:
        log_format = "console" if sys.stderr.isatty() else "json"
    structlog.configure(
        processors=processors(log_format),
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def request_id_of(given: str | None) -> str:
    """The caller's request id when it is safe to log and echo (1-128 printable ASCII, no spaces), else a new one."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return os.urandom(16).hex()  # as random as a uuid4, and a few times cheaper on the per-call path


# What handlers bind inside a request's scope (`bind_event_ids`): dropped when the scope ends.
_HANDLER_KEYS = ("event_id", "event_ids", "event_count")


@contextmanager
def scoped_context(**values: object) -> Iterator[None]:
    """Bind `values` for the block; at its end they are as they were before, and the ids a handler bound meanwhile
    are gone (each request and call runs in its own task already: this keeps it so whoever runs them). Cheaper than
    diffing the whole context: this runs on every gRPC call."""
    tokens = structlog.contextvars.bind_contextvars(**values)
    try:
        yield
    finally:
        try:
            structlog.contextvars.reset_contextvars(**tokens)
        except ValueError:
            # Ended in another context: an async generator (a gRPC stream) that the loop closed for the server.
            # That context is thrown away after, so there is nothing to restore.
            pass
        structlog.contextvars.unbind_contextvars(*_HANDLER_KEYS)


def bind_event_ids(event_ids: Iterable[str]) -> None:
    """Bind the ids of the events a request published: `event_id` for one, else `event_ids` (the first few) and
    `event_count`, so the request's canonical line names what it stored."""
    ids = list(event_ids)
    if len(ids) == 1:
        structlog.contextvars.bind_contextvars(event_id=ids[0])
    elif ids:
        structlog.contextvars.bind_contextvars(event_ids=ids[:MAX_LOGGED_EVENT_IDS], event_count=len(ids))


def bind_delivery(delivery_id: str, subscription_id: str, event_id: str) -> None:
    """A send runs in its own task, whose context is a copy of whichever task started it (another delivery's send):
    start from nothing, then bind this delivery's ids for every line logged while it is sent."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(delivery_id=delivery_id, subscription_id=subscription_id, event_id=event_id)

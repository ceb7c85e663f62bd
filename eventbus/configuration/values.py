"""Every server setting once: its file key, flag, env variable, parser and whether a reload can change it live.

A parser takes the raw value (a string from a flag or the environment, a TOML value from the file) and the label
to name in errors (`hooks-body-limit` for a flag or variable, `limits.hooks_body_limit` for the file), so the same
rules refuse bad input from every layer.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from eventbus.errors import InvalidArgumentError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Parser = Callable[[object, str], object]
_MAX_SECONDS = 10 * 365 * 86400  # past this a number of seconds is a mistake (and timedelta overflows)
_MAX_GRACE = 3600.0
_SPAN = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, field: str) -> ListenAddress:
        """`HOST:PORT` or `[IPv6]:PORT`; port 0 picks a free one."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise InvalidArgumentError.for_field(field, f"{text!r}: expected HOST:PORT (e.g. 127.0.0.1:8080)")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return cls(host, int(port))

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_networks(values: list[str], field: str) -> tuple[IPNetwork, ...]:
    networks = []
    for value in values:
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise InvalidArgumentError.for_field(field, f"{item!r} is not a CIDR: {exc}") from exc
    return tuple(networks)


def parse_duration(value: object, field: str) -> timedelta:
    """`500ms`, `30s`, `5m`, `1h`, `7d`; in the file also a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise InvalidArgumentError.for_field(field, f"{value!r}: a duration is a finite number, 0 or more")
        seconds = float(value)
    else:
        match = _SPAN.match(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise InvalidArgumentError.for_field(field, f"{value!r} is not a duration like 30s, 5m, 1h, 7d")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > _MAX_SECONDS:
        raise InvalidArgumentError.for_field(field, f"{value!r}: at most 3650d")
    return timedelta(seconds=seconds)


def _bounded_duration(low: timedelta, high: timedelta, text: str) -> Parser:
    def parse(value: object, field: str) -> timedelta:
        span = parse_duration(value, field)
        if not low <= span <= high:
            raise InvalidArgumentError.for_field(field, f"{value!r}: {text}")
        return span

    return parse


def _seconds(value: object, field: str) -> float:
    """Seconds as a number (`10`, `2.5`) or a duration (`10s`), 0 to an hour (the shutdown grace): `float()`
    also reads `-1`, `nan` and `inf`, none of which a grace can be."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    seconds = parse_duration(value, field).total_seconds()
    if seconds > _MAX_GRACE:
        raise InvalidArgumentError.for_field(field, f"{value!r}: from 0 to {_MAX_GRACE:g} seconds")
    return seconds


def _bounded_seconds(low: float, high: float) -> Parser:
    """Seconds as a number or a duration (`30`, `30s`, `2m`), from `low` to `high`."""

    def parse(value: object, field: str) -> float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        seconds = parse_duration(value, field).total_seconds()
        if not low <= seconds <= high:
            raise InvalidArgumentError.for_field(field, f"{value!r}: from {low:g} to {high:g} seconds")
        return seconds

    return parse


def _integer(low: int, high: int, unit: str) -> Parser:
    def parse(value: object, field: str) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidArgumentError.for_field(field, f"{value!r}: {unit}, from {low} to {high}")
        return value

    return parse


def _choice(*choices: str) -> Parser:
    def parse(value: object, field: str) -> str:
        text = value.lower() if isinstance(value, str) else value
        if text not in choices:
            raise InvalidArgumentError.for_field(field, f"{value!r}: use {', '.join(choices[:-1])} or {choices[-1]}")
        return str(text)

    return parse


def parse_bool(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
        return value.strip().lower() in _TRUE
    raise InvalidArgumentError.for_field(field, f"{value!r}: use true or false")


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError.for_field(field, f"{value!r}: a non-empty string")
    return value


def _listen(value: object, field: str) -> ListenAddress:
    return ListenAddress.parse(_text(value, field), field)


def _items(value: object, field: str) -> list[object]:
    """A list in the file; a comma-separated string from a flag or the environment."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    raise InvalidArgumentError.for_field(field, f"{value!r}: a list")


def _networks(value: object, field: str) -> tuple[IPNetwork, ...]:
    items = _items(value, field)
    networks: list[IPNetwork] = []
    for index, item in enumerate(items):
        label = field if isinstance(value, str) else f"{field}[{index}]"
        networks += parse_networks([_text(item, label)], label)
    return tuple(networks)


def parse_schedule(value: object, field: str) -> tuple[timedelta, ...]:
    """Retry delays, each 1 s to 7 days, at most 30 (`none` or an empty list: a single attempt)."""
    if isinstance(value, str) and value.strip().lower() == "none":
        return ()
    items = _items(value, field)
    if len(items) > 30:
        raise InvalidArgumentError.for_field(field, f"{len(items)} delays; at most 30")
    delays = []
    for index, item in enumerate(items):
        label = f"{field}[{index}]"
        delay = parse_duration(item, label)
        if not timedelta(seconds=1) <= delay <= timedelta(days=7):
            raise InvalidArgumentError.for_field(label, f"{item!r}: each delay between 1s and 7d")
        delays.append(delay)
    return tuple(delays)


@dataclass(frozen=True, slots=True)
class Setting:
    """One server setting. `dest` is the argparse destination of its `serve` flag (None: no flag)."""

    name: str  # the `ServerSettings` attribute
    path: str  # `section.key` in the file
    dest: str | None
    env: str | None
    parse: Parser
    live: bool  # a reload (SIGHUP) applies it; otherwise a change is logged as needing a restart

    @property
    def flag(self) -> str | None:
        return f"--{self.dest.replace('_', '-')}" if self.dest else None

    @property
    def label(self) -> str:
        """How errors name a value given by flag or variable (the flag without its dashes, as before the file)."""
        return (self.dest or self.name).replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("grpc_listen", "server.grpc_listen", "grpc_listen", "EVENTBUS_GRPC_LISTEN", _listen, live=False),
    Setting("http_listen", "server.http_listen", "http_listen", "EVENTBUS_HTTP_LISTEN", _listen, live=False),
    Setting("shutdown_grace", "server.shutdown_grace", "shutdown_grace", "EVENTBUS_SHUTDOWN_GRACE", _seconds, True),
    Setting("store_url", "store.url", "store", "EVENTBUS_STORE", _text, live=False),
    Setting(
        "retention",
        "store.retention",
        "retention",
        "EVENTBUS_RETENTION",
        _bounded_duration(timedelta(seconds=1), timedelta(days=3650), "between 1s and 3650d"),
        live=True,
    ),
    Setting(
        "hooks_body_limit",
        "limits.hooks_body_limit",
        "hooks_body_limit",
        "EVENTBUS_HOOKS_BODY_LIMIT",
        _integer(1024, 16 * 1024 * 1024, "bytes"),
        live=True,
    ),
    Setting(
        "max_in_flight",
        "limits.max_in_flight",
        "max_in_flight",
        "EVENTBUS_MAX_IN_FLIGHT",
        _integer(1, 100_000, "sends at once"),
        live=False,  # the outbound connection pool is sized by it when the server starts
    ),
    Setting(
        "upkeep_every",
        "store.upkeep_every",
        None,
        "EVENTBUS_UPKEEP_EVERY",
        _bounded_seconds(1.0, 3600.0),
        live=False,
    ),
    Setting(
        "lease_margin",
        "retry.lease_margin",
        None,
        "EVENTBUS_LEASE_MARGIN",
        _bounded_seconds(1.0, 600.0),
        live=False,
    ),
    Setting(
        "http_header_timeout",
        "limits.http_header_timeout",
        None,
        "EVENTBUS_HTTP_HEADER_TIMEOUT",
        _bounded_seconds(1.0, 600.0),
        live=False,
    ),
    Setting(
        "http_body_idle_timeout",
        "limits.http_body_idle_timeout",
        None,
        "EVENTBUS_HTTP_BODY_IDLE_TIMEOUT",
        _bounded_seconds(1.0, 600.0),
        live=False,
    ),
    Setting(
        "http_keepalive_timeout",
        "limits.http_keepalive_timeout",
        None,
        "EVENTBUS_HTTP_KEEPALIVE_TIMEOUT",
        _bounded_seconds(1.0, 3600.0),
        live=False,
    ),
    Setting(
        "http_max_connections",
        "limits.http_max_connections",
        None,
        "EVENTBUS_HTTP_MAX_CONNECTIONS",
        _integer(1, 1_000_000, "connections"),
        live=False,
    ),
    Setting("retry_schedule", "retry.schedule", "retry_schedule", "EVENTBUS_RETRY_SCHEDULE", parse_schedule, True),
    Setting(
        "max_pending_age",
        "retry.max_pending_age",
        "max_pending_age",
        "EVENTBUS_MAX_PENDING_AGE",
        _bounded_duration(timedelta(minutes=1), timedelta(days=30), "between 1m and 30d"),
        live=True,
    ),
    Setting(
        "allow_destinations",
        "security.allow_destinations",
        "allow_destination",
        "EVENTBUS_ALLOW_DESTINATIONS",
        _networks,
        live=True,
    ),
    Setting("insecure", "security.insecure", "insecure", "EVENTBUS_INSECURE", parse_bool, live=False),
    Setting("tls_cert", "tls.cert", "tls_cert", "EVENTBUS_TLS_CERT", _text, live=False),
    Setting("tls_key", "tls.key", "tls_key", "EVENTBUS_TLS_KEY", _text, live=False),
    Setting("tls_client_ca", "tls.client_ca", "tls_client_ca", "EVENTBUS_TLS_CLIENT_CA", _text, live=False),
    Setting("log_level", "logging.level", "log_level", "EVENTBUS_LOG_LEVEL", _choice(*_LEVELS), live=True),
    Setting("log_format", "logging.format", "log_format", "EVENTBUS_LOG_FORMAT", _choice("console", "json"), True),
    Setting("metrics_public", "metrics.public", "metrics_public", "EVENTBUS_METRICS_PUBLIC", parse_bool, False),
    Setting(
        "metrics_subscription_labels",
        "metrics.subscription_labels",
        None,
        "EVENTBUS_METRICS_SUBSCRIPTION_LABELS",
        _integer(0, 100_000, "subscriptions"),
        live=False,
    ),
)
BY_PATH = {setting.path: setting for setting in SETTINGS}
# Keys of the file that are not plain settings: `security.api_keys` (hashed keys, reloadable).
SPECIAL_KEYS = {"security": ("api_keys",)}
SECTIONS = sorted({setting.path.split(".")[0] for setting in SETTINGS})

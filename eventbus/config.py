"""Server settings from flags and environment variables (flags win), validated before anything starts."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from eventbus.errors import InvalidArgumentError
from eventbus.store import DEFAULT_STORE_URL

DEFAULT_GRPC_LISTEN = "127.0.0.1:50051"
DEFAULT_HTTP_LISTEN = "127.0.0.1:8080"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


@dataclass(frozen=True, slots=True)
class ServerSettings:
    store_url: str = DEFAULT_STORE_URL
    grpc_listen: ListenAddress = field(default_factory=lambda: ListenAddress.parse(DEFAULT_GRPC_LISTEN, "grpc"))
    http_listen: ListenAddress = field(default_factory=lambda: ListenAddress.parse(DEFAULT_HTTP_LISTEN, "http"))
    api_key: str | None = None
    allow_destinations: tuple[IPNetwork, ...] = ()
    log_format: str | None = None  # None: console on a TTY, JSON otherwise
    log_level: str = "info"
    shutdown_grace: float = 10.0
    hooks_body_limit: int = 1024 * 1024  # bytes of one `POST /hooks/{source}` body
    config_file: str | None = None  # `--config` / `EVENTBUS_CONFIG`: the TOML file the rest may come from
    tls_cert: str | None = None  # PEM certificate chain for both servers (with `tls_key`)
    tls_key: str | None = None
    tls_client_ca: str | None = None  # PEM CA bundle: clients must present a certificate it signed (mutual TLS)
    insecure: bool = False  # allow listening beyond loopback without TLS (keys are still required)
    metrics_public: bool = False  # `/metrics` without the `admin` scope
    metrics_subscription_labels: int = 100  # subscriptions labelled by id in `/metrics`; the rest as `other`

    def check_exposure(self, *, stored_keys: bool = False) -> None:
        """With no API key the server is open, so it may only listen on loopback.

        A key is `--api-key` or a stored key (`eventbus keys create`): the runtime makes this check once it has
        loaded the stored keys, before it listens (the settings alone cannot know them).
        """
        if self.api_key or stored_keys:
            return
        for name, address in (("grpc-listen", self.grpc_listen), ("http-listen", self.http_listen)):
            if not address.is_loopback:
                raise InvalidArgumentError.for_field(
                    name,
                    f"{address} is not loopback and no API key exists (--api-key, or `eventbus keys create` "
                    "on a loopback server): refusing to serve an open bus",
                )


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


def settings_from(flags: Mapping[str, object], env: Mapping[str, str] | None = None) -> ServerSettings:
    """Merge flags (None = not given) over `EVENTBUS_*` variables over defaults. Exposure is checked at start-up,
    once the stored keys are known (`EventBusServer.start`)."""
    env = os.environ if env is None else env

    def pick(flag: str, variable: str, default: str | None) -> str | None:
        value = flags.get(flag)
        if value is not None:
            return str(value)
        return env.get(variable) or default

    log_level = (pick("log_level", "EVENTBUS_LOG_LEVEL", "info") or "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise InvalidArgumentError.for_field("log-level", f"{log_level!r}: use debug, info, warning or error")
    log_format = pick("log_format", "EVENTBUS_LOG_FORMAT", None)
    if log_format not in (None, "console", "json"):
        raise InvalidArgumentError.for_field("log-format", f"{log_format!r}: use console or json")
    allow_flags = flags.get("allow_destination") or []
    assert isinstance(allow_flags, list)
    allow = allow_flags or ([env["EVENTBUS_ALLOW_DESTINATIONS"]] if env.get("EVENTBUS_ALLOW_DESTINATIONS") else [])
    grace_text = pick("shutdown_grace", "EVENTBUS_SHUTDOWN_GRACE", "10") or "10"
    try:
        grace = float(grace_text)
    except ValueError as exc:
        raise InvalidArgumentError.for_field("shutdown-grace", f"{grace_text!r} is not a number of seconds") from exc
    tls = {name: pick(name, f"EVENTBUS_{name.upper()}", None) for name in ("tls_cert", "tls_key", "tls_client_ca")}
    if bool(tls["tls_cert"]) != bool(tls["tls_key"]):
        raise InvalidArgumentError.for_field("tls-cert", "--tls-cert and --tls-key go together")
    if tls["tls_client_ca"] and not tls["tls_cert"]:
        raise InvalidArgumentError.for_field("tls-client-ca", "mutual TLS needs --tls-cert and --tls-key too")
    limit_text = pick("hooks_body_limit", "EVENTBUS_HOOKS_BODY_LIMIT", "1048576") or "1048576"
    if not limit_text.isdigit() or not 1024 <= int(limit_text) <= 16 * 1024 * 1024:
        raise InvalidArgumentError.for_field("hooks-body-limit", f"{limit_text!r}: bytes, from 1024 to 16777216")
    return ServerSettings(
        store_url=pick("store", "EVENTBUS_STORE", DEFAULT_STORE_URL) or DEFAULT_STORE_URL,
        grpc_listen=ListenAddress.parse(
            pick("grpc_listen", "EVENTBUS_GRPC_LISTEN", DEFAULT_GRPC_LISTEN) or "", "grpc-listen"
        ),
        http_listen=ListenAddress.parse(
            pick("http_listen", "EVENTBUS_HTTP_LISTEN", DEFAULT_HTTP_LISTEN) or "", "http-listen"
        ),
        api_key=pick("api_key", "EVENTBUS_API_KEY", None),
        allow_destinations=parse_networks([str(a) for a in allow], "allow-destination"),
        log_format=log_format,
        log_level=log_level,
        shutdown_grace=grace,
        hooks_body_limit=int(limit_text),
        config_file=pick("config", "EVENTBUS_CONFIG", None),
        tls_cert=tls["tls_cert"],
        tls_key=tls["tls_key"],
        tls_client_ca=tls["tls_client_ca"],
        insecure=_flag(flags, env, "insecure", "EVENTBUS_INSECURE"),
        metrics_public=_flag(flags, env, "metrics_public", "EVENTBUS_METRICS_PUBLIC"),
    )


def _flag(flags: Mapping[str, object], env: Mapping[str, str], flag: str, variable: str) -> bool:
    """A boolean switch: the flag when given, else the variable (1/true/yes/on), else off."""
    if flags.get(flag):
        return True
    return env.get(variable, "").strip().lower() in ("1", "true", "yes", "on")

"""Server settings: flags over `EVENTBUS_*` variables over the config file over defaults, validated up front.

The one place precedence is decided (`settings_from`); what each setting is called in each layer is the table in
`eventbus.configuration.values`, documented in docs/config.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from eventbus.auth import ApiKey
from eventbus.configuration.file import ConfigFile, Declarations, load_config_file
from eventbus.configuration.values import SETTINGS, IPNetwork, ListenAddress, parse_networks
from eventbus.errors import InvalidArgumentError
from eventbus.store import DEFAULT_STORE_URL
from eventbus.store.base import DEFAULT_MAX_PENDING_AGE, DEFAULT_RETRY_SCHEDULE

__all__ = ["IPNetwork", "ListenAddress", "ServerSettings", "parse_networks", "settings_from", "settings_reader"]
DEFAULT_GRPC_LISTEN = "127.0.0.1:50051"
DEFAULT_HTTP_LISTEN = "127.0.0.1:8080"


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
    retention: timedelta = timedelta(days=7)  # events, deliveries and attempts older than this are pruned
    retry_schedule: tuple[timedelta, ...] = DEFAULT_RETRY_SCHEDULE  # for subscriptions created without one
    max_pending_age: timedelta = DEFAULT_MAX_PENDING_AGE  # likewise
    max_in_flight: int = 1024  # outbound sends at once in this process, every subscription together
    config_keys: tuple[ApiKey, ...] = ()  # the file's `security.api_keys` (hashes only)
    declarations: Declarations = field(default_factory=Declarations)  # the file's sources and subscriptions
    # Slow HTTP clients (docs/operations.md): seconds from a request's first byte to the end of its headers; the
    # longest silence inside a body; open connections beyond which new ones get a 503; idle keep-alive seconds.
    http_header_timeout: float = 10.0
    http_body_idle_timeout: float = 30.0
    http_max_connections: int = 1024
    http_keepalive_timeout: float = 75.0
    upkeep_every: float = 30.0  # seconds between upkeep rounds (retention, group expiry, space reclaimed)
    # Seconds a delivery's lease outlives its attempt timeout × lease-ahead: how long a process that died or stalled
    # mid-send keeps its deliveries from the others (shorter: faster take-over, and a stalled send may go twice).
    lease_margin: float = 30.0

    def check_exposure(self, *, stored_keys: bool = False) -> None:
        """Beyond loopback the server needs an API key, and TLS unless `--insecure` (keys would travel in clear).

        A key is `--api-key`, one of the config file's keys, or a stored key (`eventbus keys create`): the runtime
        makes this check once it has loaded the stored keys, before it listens (the settings alone cannot know them).
        """
        keyed = bool(self.api_key or self.config_keys or stored_keys)
        for name, address in (("grpc-listen", self.grpc_listen), ("http-listen", self.http_listen)):
            if address.is_loopback:
                continue
            if not keyed:
                raise InvalidArgumentError.for_field(
                    name,
                    f"{address} is not loopback and no API key exists (--api-key, or `eventbus keys create` "
                    "on a loopback server): refusing to serve an open bus",
                )
            if not self.tls_cert and not self.insecure:
                raise InvalidArgumentError.for_field(
                    name,
                    f"{address} is not loopback and TLS is off: give --tls-cert and --tls-key, or --insecure to "
                    "serve plain text (API keys would cross the network in clear)",
                )


def settings_from(flags: Mapping[str, object], env: Mapping[str, str] | None = None) -> ServerSettings:
    """Merge flags (None = not given) over `EVENTBUS_*` variables over the config file over defaults.

    A bad value raises `InvalidArgumentError` naming it (a flag without its dashes, or the file key's path); a bad
    file raises `ConfigFileError` listing every problem. Exposure is checked at start-up, once the stored keys are
    known (`EventBusServer.start`).
    """
    env = os.environ if env is None else env
    config_path = _text(flags.get("config")) or env.get("EVENTBUS_CONFIG") or None
    loaded = load_config_file(config_path, env) if config_path else ConfigFile("", {})
    values: dict[str, object] = {}
    for setting in SETTINGS:
        raw = _given(flags.get(setting.dest)) if setting.dest else None
        if raw is None and setting.env:
            raw = env.get(setting.env) or None
        if raw is not None:
            values[setting.name] = setting.parse(raw, setting.label)
        elif setting.name in loaded.values:
            values[setting.name] = loaded.values[setting.name]
    settings = ServerSettings(
        **values,  # type: ignore[arg-type]
        api_key=_text(flags.get("api_key")) or env.get("EVENTBUS_API_KEY") or None,
        config_file=config_path,
        config_keys=loaded.api_keys,
        declarations=loaded.declarations,
    )
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise InvalidArgumentError.for_field("tls-cert", "--tls-cert and --tls-key go together")
    if settings.tls_client_ca and not settings.tls_cert:
        raise InvalidArgumentError.for_field("tls-client-ca", "mutual TLS needs --tls-cert and --tls-key too")
    return settings


def settings_reader(flags: Mapping[str, object], env: Mapping[str, str] | None = None) -> Callable[[], ServerSettings]:
    """What a reload (SIGHUP) reads again: the same flags and environment over the file as it is now."""
    return lambda: settings_from(flags, env)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _given(value: object) -> object | None:
    """A flag's value, None when not given (argparse's None, an empty repeatable list, a switch left off)."""
    if value is None or value is False or value == []:
        return None
    return value

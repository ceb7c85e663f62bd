"""`eventbus serve`: the store, the bus, gRPC and HTTP in one process, started and stopped in order."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import structlog
from aiohttp import web

from eventbus import __version__, tracing
from eventbus.auth import KeyRing
from eventbus.bus.deliveries import Deliveries
from eventbus.bus.destinations import DestinationKind
from eventbus.bus.dispatch import Dispatcher, DispatchSettings
from eventbus.bus.groups import ConsumerGroups
from eventbus.bus.keys import ApiKeys
from eventbus.bus.kinds import KindRegistry
from eventbus.bus.service import Bus, BusSettings
from eventbus.bus.services import Services
from eventbus.bus.sources import Sources
from eventbus.bus.subscriptions import Subscriptions
from eventbus.bus.types import EventTypes
from eventbus.bus.webhooks import WebhookKind
from eventbus.clock import Clock
from eventbus.config import ListenAddress, ServerSettings
from eventbus.configuration.reload import Reloader, ReloadOutcome
from eventbus.drain import drain_in_flight
from eventbus.egress.client import EgressClient
from eventbus.egress.ssrf import DestinationPolicy
from eventbus.errors import UnavailableError
from eventbus.grpc.server import GrpcServer
from eventbus.http.app import make_app
from eventbus.http.hooks import HookContext
from eventbus.http.hooks import add_routes as add_hook_routes
from eventbus.http.limits import GuardedTCPSite, HttpGuard, HttpLimits
from eventbus.http.metrics import install as install_metrics
from eventbus.http.rest import install as install_rest
from eventbus.http.ui import install as install_ui
from eventbus.metrics.registry import Metrics
from eventbus.plugin.lifecycle import ServerContext
from eventbus.plugin.manager import Plugins, load_plugins
from eventbus.store import open_store
from eventbus.store.keys import key_store_of
from eventbus.store.sources import source_store_of
from eventbus.store.state import state_store_of
from eventbus.store.types import event_type_store_of
from eventbus.tls import ServerTls

log = structlog.get_logger("eventbus.server")


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    grpc: ListenAddress
    http: ListenAddress


class EventBusServer:
    """The whole service; tests run it in-process with a manual clock, `serve()` runs it until a signal."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        clock: Clock | None = None,
        bus_settings: BusSettings | None = None,
        dispatch_settings: DispatchSettings | None = None,
        plugins: Plugins | None = None,
        settings_source: Callable[[], ServerSettings] | None = None,
    ) -> None:
        self.settings = settings
        # Installed plugins (entry points of group `eventbus`), unless the caller (a test) brings its own.
        self.plugins = plugins or load_plugins()
        self.store = open_store(settings.store_url)
        self.bus = Bus(
            self.store,
            clock=clock,
            settings=bus_settings
            or BusSettings(
                retention=settings.retention,
                retry_schedule=settings.retry_schedule,
                max_pending_age=settings.max_pending_age,
                janitor_every=settings.upkeep_every,
            ),
            metrics=Metrics(subscription_labels=settings.metrics_subscription_labels),
        )
        self.policy = DestinationPolicy(settings.allow_destinations)
        dispatch = dispatch_settings or DispatchSettings(
            max_in_flight=settings.max_in_flight, lease_margin=timedelta(seconds=settings.lease_margin)
        )
        # As many pooled connections as the dispatcher has sends in flight: no attempt's timeout is spent
        # waiting for a connection another destination holds.
        self.egress = EgressClient(
            self.policy, user_agent=f"eventbus/{__version__}", max_connections=dispatch.max_in_flight
        )
        self.kinds = KindRegistry()
        self.kinds.add(WebhookKind(self.egress, self.policy))
        destinations = self.plugins.destinations()
        for name in destinations.names:
            destination = destinations.get(name)
            if destination is not None:
                state = state_store_of(self.store)
                self.kinds.add(DestinationKind(destination, self.plugins, self.egress, state, self.bus.clock))
        self.dispatcher = Dispatcher(self.bus, self.kinds, dispatch)
        # `--api-key` plus the stored keys (loaded in `start`, kept current by `ApiKeys` on create and revoke).
        self.keys = KeyRing.single(settings.api_key)
        self.keys.configure(settings.api_key, settings.config_keys)  # and the config file's hashed keys
        self.services = Services(
            bus=self.bus,
            groups=ConsumerGroups(self.bus),
            subscriptions=Subscriptions(self.bus, self.kinds),
            deliveries=Deliveries(self.bus),
            api_keys=ApiKeys(key_store_of(self.store), self.keys, self.bus.clock),
            sources=Sources(self.bus, source_store_of(self.store), self.plugins.connectors()),
            types=EventTypes(self.bus, event_type_store_of(self.store)),
        )
        self.groups = self.services.groups
        # The config file's sources and subscriptions (applied in `start`) and SIGHUP reloads (`reload`).
        self.reloader = Reloader(self, settings_source)
        self.hooks: HookContext | None = None
        # TLS files are read and checked here, so a bad one stops `serve` before the store is even opened.
        self.tls = ServerTls.load(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        credentials = self.tls.grpc_credentials() if self.tls else None
        self.grpc = GrpcServer(self.services, self.keys, str(settings.grpc_listen), credentials=credentials)
        self._ready = False
        self.http_guard = HttpGuard(
            HttpLimits(
                header_timeout=settings.http_header_timeout,
                body_idle_timeout=settings.http_body_idle_timeout,
                max_connections=settings.http_max_connections,
                keepalive_timeout=settings.http_keepalive_timeout,
            )
        )
        self._hurry = asyncio.Event()  # set by a second signal: the drain ends at once
        self._runner: web.AppRunner | None = None
        self.http_app: web.Application | None = None  # every route, once started
        self.addresses: BoundAddresses | None = None

    async def start(self) -> BoundAddresses:
        await self.store.open()
        await self.services.api_keys.load()
        # Beyond loopback a key must exist: `--api-key`, or a stored one, which only the opened store knows.
        self.settings.check_exposure(stored_keys=not self.keys.open)
        await self.bus.start()
        await self.services.api_keys.start()
        await self.reloader.apply_at_start()
        await self.egress.start()
        await self.plugins.startup(ServerContext(http=self.egress.session, now=self.bus.clock.now))
        await self.dispatcher.start()
        await self.grpc.start()
        app = make_app(self.bus, self.keys, lambda: self._ready)
        hooks = HookContext(
            self.bus, source_store_of(self.store), self.plugins, body_limit=self.settings.hooks_body_limit
        )
        self.services.sources.changed.append(hooks.forget)
        self.hooks = hooks
        add_hook_routes(app, hooks)
        install_rest(app, self.services)
        install_ui(app)
        install_metrics(app, self.bus, self.plugins, self.settings)
        self.http_app = app
        self.http_guard.install(app)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=5.0,
            keepalive_timeout=self.settings.http_keepalive_timeout,
        )
        await self._runner.setup()
        listen = self.settings.http_listen
        ssl_context = self.tls.ssl_context() if self.tls else None
        site = GuardedTCPSite(
            self._runner, listen.host, listen.port, self.http_guard, reuse_address=True, ssl_context=ssl_context
        )
        try:
            await site.start()
        except OSError as exc:
            raise UnavailableError(f"cannot listen for HTTP on {listen}: {exc.strerror or exc}") from exc
        http_port = self._runner.addresses[0][1]
        self.addresses = BoundAddresses(
            grpc=ListenAddress(self.settings.grpc_listen.host, self.grpc.port),
            http=ListenAddress(listen.host, http_port),
        )
        self._ready = True
        log.info(
            "server_ready",
            grpc=str(self.addresses.grpc),
            http=str(self.addresses.http),
            store=_redact(self.settings.store_url),
            tls="off" if self.tls is None else "mutual" if self.tls.mutual else "on",
        )
        return self.addresses

    async def stop(self, grace: float | None = None) -> None:
        """Not ready first (health NOT_SERVING, /readyz 503), then stop accepting, drain, release, close."""
        grace = self.settings.shutdown_grace if grace is None else grace
        log.info("server_stopping", grace_s=grace)
        self._ready = False
        await self.grpc.begin_shutdown()
        self.bus.shutting_down.set()
        await drain_in_flight(
            grpc=self.grpc,
            http=self.http_guard,
            runner=self._runner,
            dispatcher=self.dispatcher,
            grace=grace,
            hurry=self._hurry,
        )
        await self.bus.close_sessions()
        await self.plugins.shutdown()
        await self.egress.close()
        await self.bus.stop()
        await self.services.api_keys.stop()
        await self.store.close()
        log.info("server_stopped")

    async def reload(self) -> ReloadOutcome:
        """Read the settings again (SIGHUP) and apply what can change live; see `configuration.reload`."""
        return await self.reloader.reload()

    def hurry(self) -> None:
        """End a drain under way at once: what is still in flight is cancelled (and released), then the server
        closes as usual. A second SIGTERM or SIGINT calls this."""
        if not self._hurry.is_set():
            log.warning("server_stopping_now", reason="second signal")
            self._hurry.set()


def _redact(url: str) -> str:
    """Store URLs may carry a password; never log it."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}"
    return url


async def serve(settings: ServerSettings, *, settings_source: Callable[[], ServerSettings] | None = None) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reloads (`settings_source` reads the
    settings again). Returns the exit status."""
    tracing.configure_from_env()  # OpenTelemetry spans when the environment asks for them (docs/observability.md)
    server = EventBusServer(settings, settings_source=settings_source)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    early_reload = asyncio.Event()  # a SIGHUP while starting (its default action would end the process)
    loop.add_signal_handler(signal.SIGHUP, early_reload.set)
    try:
        await server.start()
    except Exception:
        await server.stop(0)
        raise
    reloads: set[asyncio.Task[ReloadOutcome]] = set()
    loop.add_signal_handler(signal.SIGHUP, lambda: _track(reloads, asyncio.create_task(server.reload())))
    if early_reload.is_set():
        _track(reloads, asyncio.create_task(server.reload()))
    await stop.wait()
    # Removing the handler would restore SIGHUP's default action, which ends the process mid-drain.
    loop.add_signal_handler(signal.SIGHUP, lambda: log.info("config_reload_ignored", reason="shutting down"))
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal during the drain cuts it short
        loop.add_signal_handler(sig, server.hurry)
    for task in list(reloads):  # a reload half-applied is taken up by the next start (declared.py's claims)
        task.cancel()
    await asyncio.gather(*reloads, return_exceptions=True)
    await server.stop()
    return 0


def _track(tasks: set[asyncio.Task[ReloadOutcome]], task: asyncio.Task[ReloadOutcome]) -> None:
    """Keep a reload task referenced until it ends (the loop holds only weak references)."""
    tasks.add(task)
    task.add_done_callback(tasks.discard)

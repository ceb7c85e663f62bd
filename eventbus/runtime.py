"""`eventbus serve`: the store, the bus, gRPC and HTTP in one process, started and stopped in order."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

import structlog
from aiohttp import web

from eventbus import __version__
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
from eventbus.egress.client import EgressClient
from eventbus.egress.ssrf import DestinationPolicy
from eventbus.errors import UnavailableError
from eventbus.grpc.server import GrpcServer
from eventbus.http.app import make_app
from eventbus.http.hooks import HookContext
from eventbus.http.hooks import add_routes as add_hook_routes
from eventbus.http.rest import install as install_rest
from eventbus.http.ui import install as install_ui
from eventbus.plugin.lifecycle import ServerContext
from eventbus.plugin.manager import Plugins, load_plugins
from eventbus.store import open_store
from eventbus.store.keys import key_store_of
from eventbus.store.sources import source_store_of
from eventbus.store.state import state_store_of
from eventbus.store.types import event_type_store_of

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
    ) -> None:
        self.settings = settings
        # Installed plugins (entry points of group `eventbus`), unless the caller (a test) brings its own.
        self.plugins = plugins or load_plugins()
        self.store = open_store(settings.store_url)
        self.bus = Bus(self.store, clock=clock, settings=bus_settings)
        self.policy = DestinationPolicy(settings.allow_destinations)
        dispatch = dispatch_settings or DispatchSettings()
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
        self.grpc = GrpcServer(self.services, self.keys, str(settings.grpc_listen))
        self._ready = False
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
        await self.egress.start()
        await self.plugins.startup(ServerContext(http=self.egress.session, now=self.bus.clock.now))
        await self.dispatcher.start()
        await self.grpc.start()
        app = make_app(self.bus, self.keys, lambda: self._ready)
        hooks = HookContext(
            self.bus, source_store_of(self.store), self.plugins, body_limit=self.settings.hooks_body_limit
        )
        self.services.sources.changed.append(hooks.forget)
        add_hook_routes(app, hooks)
        install_rest(app, self.services)
        install_ui(app)
        self.http_app = app
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await self._runner.setup()
        listen = self.settings.http_listen
        site = web.TCPSite(self._runner, listen.host, listen.port, reuse_address=True)
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
        )
        return self.addresses

    async def stop(self, grace: float | None = None) -> None:
        """Not ready first (health NOT_SERVING, /readyz 503), then stop accepting, drain, release, close."""
        grace = self.settings.shutdown_grace if grace is None else grace
        log.info("server_stopping", grace_s=grace)
        self._ready = False
        await self.grpc.begin_shutdown()
        self.bus.shutting_down.set()
        await self.grpc.stop(grace)
        await self.bus.close_sessions()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.dispatcher.stop(grace)
        await self.plugins.shutdown()
        await self.egress.close()
        await self.bus.stop()
        await self.services.api_keys.stop()
        await self.store.close()
        log.info("server_stopped")


def _redact(url: str) -> str:
    """Store URLs may carry a password; never log it."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}"
    return url


async def serve(settings: ServerSettings) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully. Returns the exit status."""
    server = EventBusServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except Exception:
        await server.stop(0)
        raise
    await stop.wait()
    await server.stop()
    return 0

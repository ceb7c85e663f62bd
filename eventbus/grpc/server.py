"""The gRPC server: EventBus and Admin servicers, health and reflection, bound on HOST:PORT (0 = pick)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from eventbus.auth import KeyRing
from eventbus.bus.services import Services
from eventbus.errors import UnavailableError
from eventbus.grpc.admin_servicer import AdminServicer
from eventbus.grpc.decoding import UndecodableRequestInterceptor
from eventbus.grpc.eventbus_servicer import EventBusServicer
from eventbus.grpc.metrics import MetricsInterceptor
from eventbus.v1 import admin_pb2, admin_pb2_grpc, eventbus_pb2, eventbus_pb2_grpc

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Slow or vanished clients (docs/operations.md): grpc core's defaults are a 120 s handshake, no cap on streams per
# connection or on calls, idle connections kept for ever, and a keepalive ping only every 2 h (a dead subscriber's
# stream, and the leases it holds, would outlive it that long).
SLOW_CLIENT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.server_handshake_timeout_ms", 10_000),  # TLS and HTTP/2 preface done within 10 s
    ("grpc.max_concurrent_streams", 1000),  # calls at once on one connection (more wait in the client)
    ("grpc.max_connection_idle_ms", 15 * 60_000),  # a connection with no call for 15 min is closed (GOAWAY)
    ("grpc.keepalive_time_ms", 60_000),  # ping a quiet connection every minute...
    ("grpc.keepalive_timeout_ms", 20_000),  # ...and close it when the ping is not answered in 20 s
]
MAX_CONCURRENT_RPCS = 10_000  # calls at once in the process, every connection together: beyond, RESOURCE_EXHAUSTED
SERVICE_NAMES = (
    eventbus_pb2.DESCRIPTOR.services_by_name["EventBus"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
)


class GrpcServer:
    """Owns the grpc.aio server and its health servicer; `port` is the real one after `start()`."""

    def __init__(
        self,
        services: Services,
        keys: KeyRing,
        listen: str,
        *,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.listen = listen
        self.credentials = credentials  # None: plaintext (eventbus.tls.ServerTls builds them)
        self.port = 0
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            # Metrics outermost, so a request refused as undecodable is counted under INVALID_ARGUMENT.
            interceptors=[MetricsInterceptor(services.bus.metrics), UndecodableRequestInterceptor()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                *SLOW_CLIENT_OPTIONS,
            ],
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        )
        eventbus_pb2_grpc.add_EventBusServicer_to_server(
            EventBusServicer(services.bus, services.groups, keys), self.server
        )
        admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(services, keys), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)

    async def start(self) -> None:
        try:
            if self.credentials is None:
                self.port = self.server.add_insecure_port(self.listen)
            else:
                self.port = self.server.add_secure_port(self.listen, self.credentials)
        except RuntimeError as exc:
            raise UnavailableError(f"cannot listen for gRPC on {self.listen}: {exc}") from exc
        if self.port == 0:
            raise UnavailableError(f"cannot listen for gRPC on {self.listen}: the address is taken or invalid")
        await self.server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def begin_shutdown(self) -> None:
        """Tell health checkers first: every service NOT_SERVING."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        """Stop accepting calls; let in-flight ones finish within `grace` seconds, then cancel them."""
        await self.server.stop(grace)

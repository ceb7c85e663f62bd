"""The gRPC server: EventBus and Admin servicers, health and reflection, bound on HOST:PORT (0 = pick)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from eventbus.auth import KeyRing
from eventbus.bus.services import Services
from eventbus.errors import UnavailableError
from eventbus.grpc.admin_servicer import AdminServicer
from eventbus.grpc.eventbus_servicer import EventBusServicer
from eventbus.v1 import admin_pb2, admin_pb2_grpc, eventbus_pb2, eventbus_pb2_grpc

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVICE_NAMES = (
    eventbus_pb2.DESCRIPTOR.services_by_name["EventBus"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
)


class GrpcServer:
    """Owns the grpc.aio server and its health servicer; `port` is the real one after `start()`."""

    def __init__(self, services: Services, keys: KeyRing, listen: str) -> None:
        self.listen = listen
        self.port = 0
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ]
        )
        eventbus_pb2_grpc.add_EventBusServicer_to_server(
            EventBusServicer(services.bus, services.groups, keys), self.server
        )
        admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(services, keys), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)

    async def start(self) -> None:
        try:
            self.port = self.server.add_insecure_port(self.listen)
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

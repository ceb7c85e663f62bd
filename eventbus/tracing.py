"""OpenTelemetry spans (HTTP and gRPC server, publish, delivery attempts) when the `otel` extra is installed and
switched on; otherwise every helper here is one module-level None check away from doing only the W3C propagation.

Switched on by `configure_from_env` (the server calls it once at start-up) when `EVENTBUS_OTEL=1`, or when the
standard `OTEL_TRACES_EXPORTER` / `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` variables ask for traces; or by `enable`
with a tracer provider (tests, embedding applications). `opentelemetry` is imported only then.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from eventbus import __version__, tracecontext
from eventbus.bus.kinds import SendResult, SendVerdict
from eventbus.logs import bind_delivery
from eventbus.model import Event
from eventbus.tracecontext import CURRENT, OUTBOUND, TraceContext

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from eventbus.bus.kinds import DeliveryKind
    from eventbus.store.base import LeasedDelivery, Subscription
    from eventbus.store.records import AttemptResult

log = structlog.get_logger("eventbus.tracing")
_attempts_log = structlog.get_logger("eventbus.dispatch")
R = TypeVar("R")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class _Otel:
    """The OpenTelemetry names the helpers use, imported once when tracing is switched on."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import context, trace

        self.tracer = tracer
        self.context = context
        self.trace = trace
        self.kinds = {
            "server": trace.SpanKind.SERVER,
            "client": trace.SpanKind.CLIENT,
            "producer": trace.SpanKind.PRODUCER,
        }

    def start(self, name: str, kind: str, parent: TraceContext | None, attributes: Mapping[str, Any]) -> Span:
        trace = self.trace
        context = None
        if parent is not None:
            remote = trace.SpanContext(
                trace_id=int(parent.trace_id, 16),
                span_id=int(parent.parent_id, 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(int(parent.traceparent[53:55], 16)),
                trace_state=trace.TraceState.from_header([parent.tracestate]) if parent.tracestate else None,
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        return self.tracer.start_span(name, context=context, kind=self.kinds[kind], attributes=attributes)


_OTEL: _Otel | None = None  # the hot-path check: None unless tracing is on


def enabled() -> bool:
    return _OTEL is not None


def enable(provider: TracerProvider) -> None:
    """Trace with `provider` from now on (process-wide: spans of every server in this process)."""
    global _OTEL
    _OTEL = _Otel(provider.get_tracer("eventbus", __version__))


def disable() -> None:
    global _OTEL
    _OTEL = None


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (see the module docstring); `EVENTBUS_OTEL=0` and
    `OTEL_SDK_DISABLED=true` say no whatever else is set."""
    switch = environ.get("EVENTBUS_OTEL", "").strip().lower()
    if switch in _FALSE or environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    if switch in _TRUE:
        return True
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure_from_env(environ: Mapping[str, str] | None = None, *, install_global: bool = True) -> bool:
    """Switch tracing on when the environment asks for it and the SDK is installed; True when it is on. Exporter:
    `OTEL_TRACES_EXPORTER` = `otlp` (default: the OTLP/HTTP exporter, else OTLP/gRPC, whichever is installed) or
    `console`; the standard `OTEL_*` variables configure it (endpoint, headers, service name, sampler)."""
    environ = os.environ if environ is None else environ
    if not wanted(environ):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "otel_unavailable",
            reason="traces were asked for but opentelemetry-sdk is not installed: install eventbus[otel]",
        )
        return False
    name = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    exporter = _exporter(name.split(",")[0].strip())
    if exporter is None:
        return False
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create; ours only fills in the gaps.
    attributes = {"service.version": __version__}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "eventbus"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if install_global:
        trace.set_tracer_provider(provider)
    enable(provider)
    log.info("otel_enabled", exporter=name)
    return True


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        log.warning("otel_unavailable", reason=f"OTEL_TRACES_EXPORTER={name!r}: this server knows otlp and console")
        return None
    # By name: the exporter packages are optional (the `otel` extra brings the HTTP one), and either will do.
    for module in (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    ):
        try:
            return importlib.import_module(module).OTLPSpanExporter()
        except ImportError:
            continue
    log.warning("otel_unavailable", reason="no OTLP exporter is installed: install eventbus[otel]")
    return None


class SpanScope:
    """For the length of a `with` block: the span (when tracing is on), made current for OpenTelemetry and as the
    trace `CURRENT` gives the events published meanwhile (our span's, or the inbound trace when tracing is off)."""

    __slots__ = ("_attach", "_failed", "_span", "_token", "trace")

    def __init__(self, span: Span | None, parent: TraceContext | None) -> None:
        self._span = span
        self.trace = parent
        self._attach: object = None
        self._failed = False
        if span is not None:
            context = span.get_span_context()
            if context.is_valid:
                state = context.trace_state.to_header() if context.trace_state else ""
                self.trace = TraceContext(
                    tracecontext.format_traceparent(context.trace_id, context.span_id, int(context.trace_flags)),
                    state or None,
                )

    def __enter__(self) -> SpanScope:
        self._token = CURRENT.set(self.trace)
        if self._span is not None and _OTEL is not None:
            self._attach = _OTEL.context.attach(_OTEL.trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            CURRENT.reset(self._token)
        except ValueError:  # ended in another context (a stream closed by the loop): nothing to restore there
            pass
        span = self._span
        if span is None:
            return
        if error is not None and not self._failed:
            self.fail(type(error).__name__)
        if self._attach is not None and _OTEL is not None:
            _OTEL.context.detach(self._attach)
        span.end()

    def set(self, key: str, value: str | int | bool) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)

    def fail(self, error_type: str, description: str | None = None) -> None:
        """Mark the span failed (OpenTelemetry `error.type`); the description never holds a secret or a body."""
        if self._span is not None and _OTEL is not None:
            self._failed = True
            self._span.set_attribute("error.type", error_type)
            self._span.set_status(_OTEL.trace.Status(_OTEL.trace.StatusCode.ERROR, description))


def http_server(method: str, route: str, headers: Mapping[str, str], remote: str | None) -> SpanScope:
    """The scope of one HTTP request: its inbound trace context, and a SERVER span when tracing is on."""
    parent = tracecontext.from_headers(headers)
    if _OTEL is None:
        return SpanScope(None, parent)
    attributes: dict[str, Any] = {"http.request.method": method, "http.route": route}
    if remote:
        attributes["client.address"] = remote
    return SpanScope(_OTEL.start(f"{method} {route}", "server", parent, attributes), parent)


def grpc_server(method: str, traceparent: str | None, tracestate: str | None, peer: Callable[[], str]) -> SpanScope:
    """The scope of one gRPC call: the trace of its metadata, and a SERVER span when tracing is on."""
    parent = tracecontext.from_values(traceparent, tracestate) if traceparent else None
    if _OTEL is None:
        return SpanScope(None, parent)
    attributes = {"rpc.system": "grpc", "rpc.method": method, "network.peer.address": peer()}
    return SpanScope(_OTEL.start(method, "server", parent, attributes), parent)


async def publish(events: list[Event], send: Callable[[list[Event]], Awaitable[R]]) -> R:
    """`send(events)`, the events stamped with the current trace (their own wins); when tracing is on, inside a
    PRODUCER span whose context is the one they carry, so every delivery of them is a child of it."""
    if _OTEL is None:
        return await send(tracecontext.stamp(events))
    parent = CURRENT.get()
    attributes: dict[str, Any] = {"messaging.system": "eventbus", "messaging.operation.type": "publish"}
    if len(events) != 1:
        attributes["messaging.batch.message_count"] = len(events)
    with SpanScope(_OTEL.start("publish", "producer", parent, attributes), parent):
        return await send(tracecontext.stamp(events))


async def send_delivery(
    kind: DeliveryKind, subscription: Subscription, delivery: LeasedDelivery, *, now: datetime
) -> SendResult:
    """One attempt, observed: the delivery's ids bound for every line logged meanwhile and, when tracing is on, a
    CLIENT span that is a child of the event's trace and whose context the outbound request carries."""
    bind_delivery(delivery.delivery_id, subscription.id, delivery.event.event_id)
    if _OTEL is None:
        return await kind.send(subscription, delivery, now=now)
    parent = tracecontext.of_event(delivery.event.event)
    attributes: dict[str, Any] = {
        "messaging.system": "eventbus",
        "messaging.operation.type": "send",
        "messaging.message.id": delivery.event.event_id,
        "eventbus.delivery_id": delivery.delivery_id,
        "eventbus.subscription_id": subscription.id,
        "eventbus.attempt": delivery.attempt,
    }
    with SpanScope(_OTEL.start(f"deliver {subscription.kind}", "client", parent, attributes), parent) as scope:
        token = OUTBOUND.set(scope.trace)
        try:
            result = await kind.send(subscription, delivery, now=now)
        finally:
            OUTBOUND.reset(token)
        if result.status_code is not None:
            scope.set("http.response.status_code", result.status_code)
        if result.verdict is not SendVerdict.SUCCESS:
            scope.fail(result.error_class or (f"{result.status_code}" if result.status_code else "failed"))
        return result


def log_attempt(
    subscription: Subscription,
    delivery: LeasedDelivery,
    result: SendResult,
    attempt: AttemptResult,
    *,
    applied: bool,
    duration: timedelta,
) -> None:
    """The canonical line of one delivery attempt (`delivery_attempted`): one dict, built only when it is logged."""
    if not _attempts_log.is_enabled_for(logging.INFO):
        return
    retry_at = attempt.settle.retry_at
    _attempts_log.info(
        "delivery_attempted",
        subscription_id=subscription.id,
        delivery_id=delivery.delivery_id,
        event_id=delivery.event.event_id,
        attempt=delivery.attempt,
        status=result.status_code,
        error_class=result.error_class,
        outcome=attempt.settle.outcome.value if applied else "lease_lost",
        retry_at=retry_at.isoformat() if retry_at else None,
        duration_ms=round(duration.total_seconds() * 1000, 1),
        probe=delivery.probe or None,
    )

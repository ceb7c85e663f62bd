"""OpenTelemetry spans with the SDK's in-memory exporter: HTTP and gRPC server spans continue the caller's trace,
the publish span is their child, each delivery attempt is a client span under the event's trace whose context the
outbound `traceparent` carries; switched on only when asked, and nothing imported when it is not."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import aiohttp
import grpc
import pytest

from eventbus import tracing
from eventbus.runtime import EventBusServer
from eventbus.v1 import cloudevent_pb2 as ce_pb
from eventbus.v1 import eventbus_pb2 as pb
from eventbus.v1 import eventbus_pb2_grpc as pb_grpc
from tests.delivery.helpers import Receiver, settle
from tests.observability.conftest import ADMIN_KEY

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def by_name(spans: Any, name: str) -> list[Any]:
    return [span for span in spans.get_finished_spans() if span.name == name]


async def test_a_traced_publish_and_its_deliveries_continue_the_callers_trace(
    server: EventBusServer, receivers: list[Receiver], spans: Any
) -> None:
    assert server.addresses is not None
    base = f"http://{server.addresses.http}"
    async with aiohttp.ClientSession() as http:
        for receiver in receivers:
            async with http.post(f"{base}/v1/endpoints", json={"url": receiver.url}, headers=ADMIN) as reply:
                assert reply.status == 201, await reply.text()
        event = {"specversion": "1.0", "id": "o-1", "source": "/shop", "type": "order.paid"}
        headers = {
            **ADMIN,
            "Content-Type": "application/cloudevents+json",
            "traceparent": TRACEPARENT,
            "tracestate": "congo=t61rcWkgMzE",
        }
        async with http.post(f"{base}/events", data=json.dumps(event), headers=headers) as reply:
            assert reply.status == 202, await reply.text()
    ok, failing = [await receiver.wait_for(1, within=15) for receiver in receivers]
    await settle(server)

    [server_span] = by_name(spans, "POST /events")
    assert f"{server_span.context.trace_id:032x}" == TRACE_ID
    assert f"{server_span.parent.span_id:016x}" == PARENT_ID and server_span.parent.is_remote
    assert server_span.kind.name == "SERVER"
    assert server_span.attributes["http.request.method"] == "POST"
    assert server_span.attributes["http.route"] == "/events"
    assert server_span.attributes["http.response.status_code"] == 202
    [publish] = by_name(spans, "publish")
    assert publish.parent.span_id == server_span.context.span_id and publish.kind.name == "PRODUCER"
    deliveries = by_name(spans, "deliver webhook")
    assert len(deliveries) == 2
    for request, status in ((ok[0], 200), (failing[0], 500)):
        # The receiver's parent is our attempt's span, in the caller's trace, with the caller's tracestate.
        version, trace_id, parent_id, flags = request.headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01") and parent_id != PARENT_ID
        assert request.headers["tracestate"] == "congo=t61rcWkgMzE"
        [attempt] = [s for s in deliveries if f"{s.context.span_id:016x}" == parent_id]
        assert attempt.kind.name == "CLIENT" and attempt.parent.span_id == publish.context.span_id
        assert attempt.attributes["messaging.message.id"] == request.webhook_id
        assert attempt.attributes["http.response.status_code"] == status
        assert attempt.attributes["eventbus.attempt"] == 1
        assert attempt.status.status_code.name == ("UNSET" if status == 200 else "ERROR")


async def test_grpc_calls_get_server_spans_continuing_the_metadata_trace(server: EventBusServer, spans: Any) -> None:
    assert server.addresses is not None
    async with grpc.aio.insecure_channel(str(server.addresses.grpc)) as channel:
        stub = pb_grpc.EventBusStub(channel)
        request = pb.PublishRequest(events=[ce_pb.CloudEvent(id="g-1", source="/t", type="t.grpc", spec_version="1.0")])
        metadata = (("authorization", f"Bearer {ADMIN_KEY}"), ("traceparent", TRACEPARENT))
        await stub.Publish(request, metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Publish(request, metadata=(("authorization", "Bearer ebk_x_y"), ("traceparent", "junk")))
    served, refused = by_name(spans, "Publish")
    assert f"{served.context.trace_id:032x}" == TRACE_ID and f"{served.parent.span_id:016x}" == PARENT_ID
    assert served.attributes["rpc.system"] == "grpc" and served.attributes["rpc.grpc.status_code"] == 0
    assert served.attributes["network.peer.address"].startswith(("ipv4:", "ipv6:"))
    assert refused.parent is None  # an invalid traceparent starts a new trace
    assert refused.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert refused.status.status_code.name == "ERROR" and refused.attributes["error.type"] == "UNAUTHENTICATED"
    [publish] = by_name(spans, "publish")
    assert publish.parent.span_id == served.context.span_id


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"EVENTBUS_OTEL": "1"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"EVENTBUS_OTEL": "0", "OTEL_TRACES_EXPORTER": "console"}, False),
        ({"EVENTBUS_OTEL": "1", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_when_asked(environ: dict[str, str], wanted: bool) -> None:
    assert tracing.wanted(environ) is wanted


def test_configure_from_env_builds_the_asked_exporter_or_stays_off() -> None:
    pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk (the `otel` extra) is not installed")
    try:
        assert not tracing.configure_from_env({}, install_global=False) and not tracing.enabled()
        unknown = {"EVENTBUS_OTEL": "1", "OTEL_TRACES_EXPORTER": "zipkin-v0"}
        assert not tracing.configure_from_env(unknown, install_global=False) and not tracing.enabled()
        console = {"OTEL_TRACES_EXPORTER": "console"}
        assert tracing.configure_from_env(console, install_global=False) and tracing.enabled()
    finally:
        tracing.disable()


def test_nothing_of_opentelemetry_is_imported_when_tracing_is_off() -> None:
    script = (
        "import sys, eventbus.runtime, eventbus.cli, eventbus.tracing as t;"
        "assert not t.configure_from_env({});"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

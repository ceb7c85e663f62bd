"""W3C trace context in and out: `traceparent`/`tracestate` from HTTP headers (`/events` in every mode, `/v1/events`,
`/hooks/*`) and gRPC metadata, kept on the events as CloudEvents extension attributes (an event's own wins),
and sent on every outbound webhook; invalid ones ignored."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import aiohttp
import grpc
import pytest

from eventbus.model import Event
from eventbus.runtime import EventBusServer
from eventbus.tracecontext import CURRENT, TraceContext, from_values, parse_traceparent, parse_tracestate, stamp
from eventbus.v1 import cloudevent_pb2 as ce_pb
from eventbus.v1 import eventbus_pb2 as pb
from eventbus.v1 import eventbus_pb2_grpc as pb_grpc
from tests.delivery.helpers import Received, Receiver
from tests.observability.conftest import ADMIN_KEY

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
OWN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.mark.parametrize(
    "value",
    [
        TRACEPARENT.upper(),  # uppercase hex is not allowed
        f"01-{TRACE_ID}-00f067aa0ba902b7-01",  # only version 00 is read
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID}-00f067aa0ba902b7-1",
        f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra",
        f"00-{TRACE_ID[:-1]}g-00f067aa0ba902b7-01",
        "",
        "garbage",
    ],
)
def test_an_invalid_traceparent_is_ignored(value: str) -> None:
    assert parse_traceparent(value) is None
    assert from_values(value, "vendor=1") is None  # and the tracestate with it


def test_a_valid_traceparent_and_a_bounded_tracestate_are_kept() -> None:
    context = from_values(f" {TRACEPARENT} ", " congo=t61rcWkgMzE,rojo=00f067aa0ba902b7 ")
    assert context == TraceContext(TRACEPARENT, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    assert (context.trace_id, context.parent_id, context.sampled) == (TRACE_ID, "00f067aa0ba902b7", True)
    assert parse_tracestate("a=" + "x" * 600) is None
    assert parse_tracestate("a=1\x00") is None
    assert parse_tracestate(",".join(f"k{n}=v" for n in range(33))) is None
    assert parse_tracestate(",".join(f"k{n}=v" for n in range(32))) is not None
    assert from_values(TRACEPARENT, "a=\x7f") == TraceContext(TRACEPARENT, None)


def test_an_events_own_traceparent_wins() -> None:
    plain = Event.create(type="a.b", source="/s", id="1", extensions={"tracestate": "stale=1"})
    own = Event.create(type="a.b", source="/s", id="2", extensions={"traceparent": OWN, "tracestate": "mine=1"})
    assert stamp([plain, own]) == [plain, own]  # no trace around: nothing changes
    token = CURRENT.set(TraceContext(TRACEPARENT, None))
    try:
        stamped_plain, stamped_own = stamp([plain, own])
    finally:
        CURRENT.reset(token)
    assert stamped_plain.extensions == {"traceparent": TRACEPARENT}
    assert stamped_own is own


def received_for(receiver: Receiver, event_id: str) -> Received:
    found = [r for r in receiver.requests if r.webhook_id == event_id]
    assert found, f"no request for {event_id}"
    return found[0]


async def add_endpoint(http: aiohttp.ClientSession, base: str, receiver: Receiver) -> None:
    async with http.post(f"{base}/v1/endpoints", json={"url": receiver.url}, headers=ADMIN) as reply:
        assert reply.status == 201, await reply.text()


async def test_traceparent_round_trip_through_every_entry_point(
    server: EventBusServer, receivers: list[Receiver]
) -> None:
    assert server.addresses is not None
    base = f"http://{server.addresses.http}"
    receiver = receivers[0]
    trace = {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"}
    ids: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        await add_endpoint(http, base, receiver)
        source = {"name": "gh", "connector": "github", "secrets": ["s3cret"]}
        async with http.post(f"{base}/v1/sources", json=source, headers=ADMIN) as reply:
            assert reply.status == 201, await reply.text()

        binary = {**ADMIN, **trace, "ce-specversion": "1.0", "ce-id": "bin", "ce-source": "/t", "ce-type": "t.bin"}
        async with http.post(f"{base}/events", data=b"{}", headers=binary) as reply:
            assert reply.status == 202, await reply.text()
            ids["binary"] = (await reply.json())["events"][0]["event_id"]
        invalid = {**binary, "ce-id": "bin-invalid", "traceparent": TRACEPARENT.upper()}
        async with http.post(f"{base}/events", data=b"{}", headers=invalid) as reply:
            ids["invalid"] = (await reply.json())["events"][0]["event_id"]
        batch = [
            {"specversion": "1.0", "id": "b-1", "source": "/t", "type": "t.batch"},
            {"specversion": "1.0", "id": "b-2", "source": "/t", "type": "t.batch", "traceparent": OWN},
        ]
        headers = {**ADMIN, **trace, "Content-Type": "application/cloudevents-batch+json"}
        async with http.post(f"{base}/events", data=json.dumps(batch), headers=headers) as reply:
            ids["batch"], ids["own"] = [e["event_id"] for e in (await reply.json())["events"]]
        rest = {"events": [{"specversion": "1.0", "id": "r-1", "source": "/t", "type": "t.rest"}]}
        async with http.post(f"{base}/v1/events", json=rest, headers={**ADMIN, **trace}) as reply:
            assert reply.status == 201, await reply.text()
            ids["rest"] = (await reply.json())["events"][0]["event_id"]
        body = b'{"zen": "Keep it logically awesome."}'
        hook = {
            **trace,
            "Content-Type": "application/json",
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest(),
        }
        async with http.post(f"{base}/hooks/gh", data=body, headers=hook) as reply:
            assert reply.status == 202, await reply.text()
            ids["hook"] = (await reply.json())["events"][0]["event_id"]

    async with grpc.aio.insecure_channel(str(server.addresses.grpc)) as channel:
        event = ce_pb.CloudEvent(id="g-1", source="/t", type="t.grpc", spec_version="1.0")
        metadata = (("authorization", f"Bearer {ADMIN_KEY}"), *trace.items())
        reply = await pb_grpc.EventBusStub(channel).Publish(pb.PublishRequest(events=[event]), metadata=metadata)
        ids["grpc"] = reply.results[0].event_id

    await receiver.wait_for(len(ids), within=15)
    for entry in ("binary", "batch", "rest", "hook", "grpc"):
        headers = received_for(receiver, ids[entry]).headers
        assert (headers.get("traceparent"), headers.get("tracestate")) == (TRACEPARENT, "congo=t61rcWkgMzE"), entry
    assert "traceparent" not in received_for(receiver, ids["invalid"]).headers
    own = received_for(receiver, ids["own"]).headers
    assert own["traceparent"] == OWN and "tracestate" not in own
    # Kept on the stored event as its extension attributes.
    stored = await server.bus.store.get_event(ids["grpc"])
    assert stored is not None
    assert stored.event.extensions == {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"}

"""The logs of the main flows, captured as `eventbus serve` renders them: each line about a request, call, event or
delivery carries its ids, and no credential (API keys, source and endpoint secrets, signatures, URL tokens, extra
header values), in clear or in its signed or base64 forms, appears anywhere."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid

import aiohttp
import grpc
import pytest

from eventbus.runtime import EventBusServer
from eventbus.v1 import cloudevent_pb2 as ce_pb
from eventbus.v1 import eventbus_pb2 as pb
from eventbus.v1 import eventbus_pb2_grpc as pb_grpc
from tests.delivery.helpers import Receiver, settle
from tests.observability.conftest import ADMIN_KEY, CapturedLogs

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_ids_on_every_line_and_no_secret_anywhere(
    server: EventBusServer, receivers: list[Receiver], captured: CapturedLogs
) -> None:
    assert server.addresses is not None
    base = f"http://{server.addresses.http}"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    source_secret = f"gh-{secrets.token_hex(16)}"
    url_token = secrets.token_hex(12)
    endpoint_token = secrets.token_hex(12)
    endpoint_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    header_secret = secrets.token_hex(16)
    wrong_key = f"ebk_nobody_{secrets.token_hex(20)}"
    ok_receiver, failing_receiver = receivers

    async with aiohttp.ClientSession() as http:
        # Admin calls whose bodies hold secrets.
        source = {"name": "gh", "connector": "github", "secrets": [source_secret]}
        async with http.post(f"{base}/v1/sources", json=source, headers=admin) as reply:
            assert reply.status == 201, await reply.text()
        endpoint_ids = []
        for receiver in receivers:
            endpoint = {
                "url": f"{receiver.url}?token={endpoint_token}",
                "secret": endpoint_secret,
                "headers": {"X-Api-Key": header_secret},
            }
            async with http.post(f"{base}/v1/endpoints", json=endpoint, headers=admin) as reply:
                assert reply.status == 201, await reply.text()
                endpoint_ids.append((await reply.json())["id"])

        # A provider webhook with a URL token, accepted, then one with a bad signature.
        body = json.dumps({"action": "opened", "pull_request": {"id": 7}}).encode()
        good_signature = github_signature(source_secret, body)
        hook_headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": str(uuid.uuid4()),
        }
        async with http.post(
            f"{base}/hooks/gh?token={url_token}",
            data=body,
            headers={**hook_headers, "X-Hub-Signature-256": good_signature, "X-Request-Id": "hook-1"},
        ) as reply:
            assert reply.status == 202, await reply.text()
            hook_event_id = (await reply.json())["events"][0]["event_id"]
        bad_signature = github_signature("not-the-secret", body)
        async with http.post(
            f"{base}/hooks/gh?token={url_token}",
            data=body,
            headers={**hook_headers, "X-Hub-Signature-256": bad_signature, "X-Request-Id": "hook-bad"},
        ) as reply:
            assert reply.status == 401

        # A publish with a caller's request id, and one with a key that does not exist.
        event = {"specversion": "1.0", "id": "order-1", "source": "/shop", "type": "order.paid", "data": {"n": 1}}
        headers = {**admin, "Content-Type": "application/cloudevents+json", "X-Request-Id": "req-publish-1"}
        async with http.post(f"{base}/events", data=json.dumps(event), headers=headers) as reply:
            assert reply.status == 202, await reply.text()
            assert reply.headers["X-Request-Id"] == "req-publish-1"
            http_event_id = (await reply.json())["events"][0]["event_id"]
        headers = {"Authorization": f"Bearer {wrong_key}", "Content-Type": "application/cloudevents+json"}
        async with http.post(f"{base}/events", data=json.dumps(event), headers=headers) as reply:
            assert reply.status == 401
            refused_request_id = reply.headers["X-Request-Id"]
        # A request id that is not safe to log is replaced.
        hostile = {**admin, "X-Request-Id": "x" * 500}
        async with http.get(f"{base}/v1/subscriptions", headers=hostile) as reply:
            assert reply.status == 200 and len(reply.headers["X-Request-Id"]) == 32

    # gRPC: a publish with a request id in the metadata (returned in the trailing metadata), and a refused call.
    async with grpc.aio.insecure_channel(str(server.addresses.grpc)) as channel:
        stub = pb_grpc.EventBusStub(channel)
        request = pb.PublishRequest(
            events=[ce_pb.CloudEvent(id="g-1", source="/grpc", type="order.paid", spec_version="1.0", text_data="x")]
        )
        call = stub.Publish(request, metadata=(("authorization", f"Bearer {ADMIN_KEY}"), ("x-request-id", "rpc-1")))
        grpc_event_id = (await call).results[0].event_id
        assert ("x-request-id", "rpc-1") in tuple(await call.trailing_metadata())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Publish(request, metadata=(("authorization", f"Bearer {wrong_key}"),))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert any(k == "x-request-id" and len(v) == 32 for k, v in refused.value.trailing_metadata() or ())

    await ok_receiver.wait_for(3, within=15)
    await failing_receiver.wait_for(3, within=15)
    await settle(server)

    # The ids, on the lines they belong to.
    published = captured.one("http_request", request_id="req-publish-1")
    assert (published["event_id"], published["status"], published["route"]) == (http_event_id, 202, "/events")
    assert published["method"] == "POST" and published["remote"] == "127.0.0.1" and published["duration_ms"] >= 0
    hook = captured.one("http_request", request_id="hook-1")
    assert (hook["event_id"], hook["route"], hook["path"]) == (hook_event_id, "/hooks/{source}", "/hooks/gh")
    assert captured.one("hook_refused", request_id="hook-bad")["status"] == 401
    assert captured.one("http_request", request_id="hook-bad")["status"] == 401
    assert captured.one("http_request", request_id=refused_request_id)["status"] == 401
    rpc = captured.one("grpc_call", request_id="rpc-1")
    assert (rpc["method"], rpc["code"], rpc["event_id"]) == ("Publish", "OK", grpc_event_id)
    assert rpc["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:")) and rpc["duration_ms"] >= 0
    assert [line["code"] for line in captured.named("grpc_call", method="Publish")].count("UNAUTHENTICATED") == 1
    for event_id in (hook_event_id, http_event_id, grpc_event_id):
        lines = captured.named("delivery_attempted", event_id=event_id)
        assert sorted(line["subscription_id"] for line in lines) == sorted(endpoint_ids), lines
        for line in lines:
            assert line["delivery_id"].startswith("dlv_") and line["attempt"] == 1 and line["duration_ms"] >= 0
            failing = line["subscription_id"] == endpoint_ids[1]
            expected = ("retry", 500) if failing else ("succeeded", 200)
            assert (line["outcome"], line["status"]) == expected, line
            assert (line["retry_at"] is not None) is failing
    # A request's ids stay with the request: nothing logged by the dispatcher carries one.
    assert not [line for line in captured.named("delivery_attempted") if "request_id" in line]

    # No credential, in any form, anywhere.
    received = [r for receiver in receivers for r in receiver.requests]
    signatures = [sig for r in received for sig in r.signatures()]
    assert signatures and all(r.headers["x-api-key"] == header_secret for r in received)
    forbidden = {
        "admin key": ADMIN_KEY,
        "admin key secret": ADMIN_KEY.rsplit("_", 1)[1],
        "unknown key": wrong_key,
        "unknown key secret": wrong_key.rsplit("_", 1)[1],
        "source secret": source_secret,
        "hook signature": good_signature,
        "hook signature hex": good_signature.removeprefix("sha256="),
        "bad signature hex": bad_signature.removeprefix("sha256="),
        "hook URL token": url_token,
        "endpoint URL token": endpoint_token,
        "endpoint secret": endpoint_secret,
        "endpoint secret key": endpoint_secret.removeprefix("whsec_"),
        "endpoint extra header": header_secret,
        **{f"outbound signature {i}": sig for i, sig in enumerate(signatures)},
    }
    text = captured.text
    assert text.count("\n") > 10, text
    leaked = [name for name, value in forbidden.items() if value in text]
    assert not leaked, f"{leaked} found in the logs:\n{text}"

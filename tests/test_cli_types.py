"""`eventbus types | events | endpoints test | subscriptions test` as an operator runs them: real subprocesses against
a real `eventbus serve` process, a local receiver for the test sends, exit codes scripts can trust."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import ServerProcess, start_server_process
from tests.test_cli_endpoints import Run, cli, on_a_terminal

SCHEMA = {"type": "object", "required": ["total"], "properties": {"total": {"type": "integer", "minimum": 0}}}


@pytest.fixture
def address(tmp_path: Path, server_process: list[ServerProcess]) -> str:
    running = start_server_process(tmp_path, extra=["--allow-destination", "127.0.0.1/32"])
    server_process.append(running)
    return running.grpc


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, asyncio.Queue[bytes]]]:
    """A local webhook receiver: its URL, and the bodies it was sent, as they come."""
    bodies: asyncio.Queue[bytes] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await bodies.put(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", bodies
    finally:
        await runner.cleanup()


async def publish(address: str, type_: str, data: object, *extra: str) -> Run:
    return await cli(address, "publish", "--type", type_, "--source", "/shop", "--data", json.dumps(data), *extra)


async def publish_batch(address: str, tmp_path: Path, *events: dict[str, object]) -> list[dict[str, object]]:
    """One `publish --batch` of CloudEvents JSON lines (ids 0, 1, ...): one process, not one per event."""
    batch = tmp_path / "batch.jsonl"
    lines = [{"specversion": "1.0", "id": str(n), "source": "/shop", **e} for n, e in enumerate(events)]
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return list((await cli(address, "publish", "--batch", str(batch))).lines())


async def test_types_list_show_and_schema_set_rm(address: str, tmp_path: Path) -> None:
    await publish_batch(
        address,
        tmp_path,
        {"type": "order.paid", "data": {"total": 1}},
        {"type": "order.item.added", "data": {"sku": "a-1"}},
        {"type": "order.paid", "data": {"total": 2}},
    )
    listed, by_pattern, shown = await asyncio.gather(
        cli(address, "types", "list"),
        cli(address, "types", "list", "--pattern", "order.*"),
        cli(address, "types", "show", "order.paid"),
    )
    assert [(t["type"], t["count"], t["schema"]) for t in listed.lines()] == [
        ("order.item.added", 1, None),
        ("order.paid", 2, None),
    ]
    assert [t["type"] for t in by_pattern.lines()] == ["order.paid"]
    record = shown.json()
    assert (record["count"], record["sample"], record["sample_omitted"]) == (2, {"total": 2}, None)
    assert record["sample_event_id"].startswith("evt_") and record["first_seen"] <= record["last_seen"]

    schema_file = tmp_path / "order.json"
    schema_file.write_text(json.dumps(SCHEMA))
    registered = (await cli(address, "types", "schema", "set", "order.paid", "--schema", f"@{schema_file}")).json()
    assert registered["schema"] == SCHEMA and registered["schema_updated_at"] is not None

    shown, refused, accepted, bad, remote, not_json, no_schema = await asyncio.gather(
        cli(address, "types", "show", "order.paid"),
        publish(address, "order.paid", {"total": -1}),
        publish(address, "order.paid", {"total": 3}),
        cli(address, "types", "schema", "set", "order.paid", "--schema", '{"type": "nope"}'),
        cli(address, "types", "schema", "set", "x.y", "--schema", '{"$ref": "https://example.com/s"}'),
        cli(address, "types", "schema", "set", "order.paid", "--schema", "{oops"),
        cli(address, "types", "schema", "set", "order.paid"),
    )
    assert shown.json()["schema"] == SCHEMA
    assert refused.code == 1 and refused.stdout == ""
    assert "events[0].data" in refused.stderr and "#/properties/total/minimum" in refused.stderr
    assert accepted.code == 0
    assert bad.code == 1 and "schema:" in bad.stderr
    assert remote.code == 1 and "remote references are never fetched" in remote.stderr
    assert not_json.code == 2 and "--schema" in not_json.stderr
    assert no_schema.code == 2  # --schema is required

    removed = await cli(address, "types", "schema", "rm", "order.paid")
    assert removed.json() == {"type": "order.paid", "schema_deleted": True}
    again, now_accepted, unknown = await asyncio.gather(
        cli(address, "types", "schema", "rm", "order.paid"),
        publish(address, "order.paid", {"total": -1}),
        cli(address, "types", "show", "never.seen"),
    )
    assert again.code == 1 and "has no schema" in again.stderr
    assert now_accepted.code == 0
    assert unknown.code == 1 and "never.seen" in unknown.stderr

    table = await on_a_terminal(address, "types", "list")
    header, *rows = table.splitlines()
    assert header.split() == ["TYPE", "COUNT", "FIRST_SEEN", "LAST_SEEN", "SCHEMA"]
    assert [row.split()[:2] for row in rows] == [["order.item.added", "1"], ["order.paid", "4"]]


async def test_events_list_and_show(address: str, tmp_path: Path) -> None:
    published = await publish_batch(
        address,
        tmp_path,
        {"type": "order.paid", "subject": "o-1", "data": {"n": 0}},
        {"type": "order.shipped", "subject": "o-1", "data": {"n": 1}},
        {"type": "invoice.sent", "subject": "i-9", "data": {"n": 2}},
    )
    runs = await asyncio.gather(
        cli(address, "events", "list"),
        cli(address, "events", "list", "--pattern", "order.*", "--pattern", "invoice.*", "--limit", "2"),
        cli(address, "events", "list", "--since", "1h", "--until", "2h"),
        cli(
            address,
            "events",
            "list",
            "--source",
            "/shop",
            "--subject",
            "o-1",
            "--since",
            "1h",
            "--until",
            "2099-01-01T00:00:00Z",
        ),
        cli(address, "events", "show", str(published[2]["event_id"])),
        cli(address, "events", "show", "--source", "/shop", "--id", "2"),
    )
    everything, limited, too_early, by_subject, shown, by_identity = runs
    assert [e["type"] for e in everything.lines()] == ["order.paid", "order.shipped", "invoice.sent"]
    assert [e["event_id"] for e in everything.lines()] == [p["event_id"] for p in published]
    assert everything.lines()[0]["data"] == {"n": 0} and everything.lines()[0]["source"] == "/shop"
    assert [e["type"] for e in limited.lines()] == ["order.paid", "order.shipped"]
    assert too_early.code == 2 and "--until" in too_early.stderr  # --until must come after --since
    assert [e["type"] for e in by_subject.lines()] == ["order.paid", "order.shipped"]
    record = shown.json()
    assert (record["type"], record["subject"], record["data"], record["seq"]) == ("invoice.sent", "i-9", {"n": 2}, 3)
    assert by_identity.json() == record
    assert record["raw_request"] is None  # published, not received on /hooks

    usage = [("events", "show"), ("events", "show", "nope"), ("events", "list", "--limit", "0")]
    *usage_runs, bad_pattern, missing = await asyncio.gather(
        *(cli(address, *args) for args in usage),
        cli(address, "events", "list", "--pattern", "order.sh*"),
        cli(address, "events", "show", "evt_01JZZZZZZZZZZZZZZZZZZZZZZZ"),
    )
    assert [run.code for run in usage_runs] == [2, 2, 2]
    assert bad_pattern.code == 1 and "patterns[0]" in bad_pattern.stderr
    assert missing.code == 1 and "does not exist" in missing.stderr


async def test_endpoints_test_and_subscriptions_test(address: str, receiver: tuple[str, asyncio.Queue[bytes]]) -> None:
    url, bodies = receiver
    added, added_other = await asyncio.gather(
        cli(address, "endpoints", "add", url, "--pattern", "order.*"),
        cli(address, "endpoints", "add", url, "--pattern", "**", "--pattern", "eventbus.**"),
    )
    endpoint, other = added.json(), added_other.json()

    sent = (await cli(address, "endpoints", "test", endpoint["id"])).json()
    assert sent["subscription_id"] == endpoint["id"] and sent["id"].startswith("dlv_")
    body = json.loads(await asyncio.wait_for(bodies.get(), 10))
    assert body["type"] == "eventbus.test" and body["data"]["subscription_id"] == endpoint["id"]

    given = await cli(
        address, "subscriptions", "test", endpoint["id"], "--type", "eventbus.test.order", "--data", '{"total": 7}'
    )
    assert given.json()["subscription_id"] == endpoint["id"]
    body = json.loads(await asyncio.wait_for(bodies.get(), 10))
    assert (body["type"], body["data"]) == ("eventbus.test.order", {"total": 7})

    async def attempts(delivery_id: str) -> list[dict[str, object]]:
        while True:  # each round is a process and a server round trip: no sleep needed
            shown = (await cli(address, "deliveries", "show", delivery_id)).json()
            if shown["state"] == "succeeded":
                return list(shown["attempts"])

    assert [a["status_code"] for a in await asyncio.wait_for(attempts(sent["id"]), 10)] == [200]
    listed = (await cli(address, "deliveries", "list", "--subscription", other["id"])).lines()
    assert listed == []  # the catch-all endpoint got neither test event
    assert bodies.empty()

    assert (await cli(address, "endpoints", "pause", endpoint["id"])).code == 0
    paused, bad_data, unknown = await asyncio.gather(
        cli(address, "endpoints", "test", endpoint["id"]),
        cli(address, "endpoints", "test", other["id"], "--data", "{oops"),
        cli(address, "endpoints", "test", "sub_01JZZZZZZZZZZZZZZZZZZZZZZZ"),
    )
    assert paused.code == 1 and "paused" in paused.stderr
    assert bad_data.code == 2 and "--data" in bad_data.stderr
    assert unknown.code == 1 and "does not exist" in unknown.stderr

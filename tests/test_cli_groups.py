"""`eventbus groups list | show | seek | rm` as an operator runs them: real subprocesses against the in-process server,
the group joined (and its events acked) by the Python client, exit codes scripts can trust."""

from __future__ import annotations

import asyncio

import pytest

from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.errors import NotFoundError
from eventbus.model import format_rfc3339
from eventbus.runtime import EventBusServer
from tests.grpc.helpers import Consumer, event
from tests.test_cli_endpoints import cli, on_a_terminal, parse_table


@pytest.fixture
def address(server: EventBusServer) -> str:
    assert server.addresses is not None
    return str(server.addresses.grpc)


async def consume(consumer: Consumer, event_ids: list[str]) -> None:
    """The next deliveries are these events, in order; ack each."""
    for expected in event_ids:
        delivery = await consumer.next()
        assert delivery.event.event_id == expected
        await delivery.ack()


async def test_show_seek_rm(address: str, client: EventBusClient, clock: ManualClock) -> None:
    published_at = clock.now()
    async with Consumer(client.subscribe("billing", ["order.*"], filter='{"data.n": {"$gte": 0}}')) as consumer:
        results = await client.publish([event(id=f"g{i}", data={"n": i}) for i in range(3)])
        ids = [r.event_id for r in results]
        await consume(consumer, ids)

        shown = (await cli(address, "groups", "show", "billing", "--json")).json()
        subscription_id = shown["subscription_id"]
        assert subscription_id.startswith("sub_")
        assert (shown["name"], shown["patterns"], shown["filter"], shown["ephemeral"]) == (
            "billing",
            ["order.*"],
            {"data.n": {"$gte": 0}},
            False,
        )
        assert (shown["lag"], shown["pending"], shown["leased"], shown["succeeded"], shown["dead"]) == (0, 0, 0, 3, 0)
        assert (shown["active_streams"], shown["oldest_pending_age"]) == (1, None)
        assert shown["created_at"] == shown["last_active_at"] == format_rfc3339(published_at)
        by_id = (await cli(address, "groups", "show", subscription_id, "--json")).json()
        assert by_id == shown

        # Back to the second event by seq: the second and third come again (the deliveries are made in the
        # background, so the answer's lag may not count them yet; the stream shows them).
        seeked = (await cli(address, "groups", "seek", "billing", "--to", str(results[1].seq), "--json")).json()
        assert (seeked["name"], seeked["subscription_id"], seeked["succeeded"]) == ("billing", subscription_id, 3)
        await consume(consumer, ids[1:])

        # Back to a time: every event received at or after it comes again.
        by_time = await cli(address, "groups", "seek", "billing", "--to", format_rfc3339(published_at), "--json")
        assert (by_time.json()["name"], by_time.json()["subscription_id"]) == ("billing", subscription_id)
        await consume(consumer, ids)
        assert (await client.get_group("billing")).succeeded == 8

    [listed] = (await cli(address, "groups", "list", "--json")).lines()
    assert (listed["name"], listed["subscription_id"], listed["lag"], listed["succeeded"]) == (
        "billing",
        subscription_id,
        0,
        8,
    )
    table = parse_table(await on_a_terminal(address, "groups", "list"))
    assert [(row["NAME"], row["PATTERNS"], row["LAG"]) for row in table] == [("billing", "order.*", "0")]

    assert (await cli(address, "groups", "rm", "billing", "--json")).json() == {"deleted": "billing"}
    with pytest.raises(NotFoundError):
        await client.get_group("billing")
    assert (await cli(address, "groups", "list", "--json")).stdout == ""


async def test_a_missing_group_exits_1_and_bad_flags_exit_2(address: str, client: EventBusClient) -> None:
    async with Consumer(client.subscribe("kept", ["order.*"])):
        pass
    missing = await asyncio.gather(
        cli(address, "groups", "show", "ghost", "--json"),
        cli(address, "groups", "seek", "ghost", "--to", "1", "--json"),
        cli(address, "groups", "rm", "ghost", "--json"),
    )
    for run in missing:
        assert run.code == 1 and run.stdout == ""
        assert "group 'ghost' does not exist" in run.stderr
    usage = await asyncio.gather(
        cli(address, "groups", "seek", "kept", "--to", "yesterday"),
        cli(address, "groups", "seek", "kept"),
        cli(address, "groups", "show"),
    )
    assert [run.code for run in usage] == [2, 2, 2]
    assert "--to" in usage[0].stderr
    assert (await client.get_group("kept")).name == "kept"  # nothing above touched it

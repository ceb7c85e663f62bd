"""One RD Station OAuth authorization used by three processes at once (issue 7, multi-process): when the access
token expires, the processes refresh around the same time with the same refresh token, RD rotates it on the first
exchange and refuses the others, and yet every event reaches RD exactly once, no alert is raised, and the chain
left in the store is the one RD accepts.

RD is the local API double (`eventbus_rdstation.testing`) in this test's process. Its token endpoint holds the
first exchange of each refresh token until a second one carrying the same token arrives (or `RACE_HOLD` passes):
one process refreshes per chain at a time, so a second exchange of the same token comes from another process, and
the race the test is about happens for certain whenever two processes are sending when the token expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from eventbus_rdstation.testing import RDStationDouble

from eventbus.client import EventBusClient
from eventbus.model import Event
from tests.multiprocess.conftest import PG_DATABASE, PG_SERVER, Cluster, all_succeeded, eventually, unique_type

ROUNDS = 4  # each starts with every access token expired
PER_ROUND = 30  # events published per round, spread over the processes
RACE_HOLD = 1.0  # seconds the first exchange of a refresh token waits for a second one
MAPPING = {
    "event_type": "SALE",
    "payload": {"email": "$.data.email", "value": "$.data.n", "order_id": "$.id"},
}


class TokenRace:
    """`on_token_request` of the double: counts the exchanges of each refresh token, and holds the first one until
    another exchange of the same token arrives, so two processes' refreshes meet at RD."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self._second: dict[str, asyncio.Event] = {}

    async def __call__(self, grant: dict[str, object]) -> None:
        token = str(grant.get("refresh_token"))
        self.sent[token] += 1
        if self.sent[token] == 1:
            arrived = self._second[token] = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RACE_HOLD):
                    await arrived.wait()
        else:
            self._second[token].set()

    def raced(self) -> dict[str, int]:
        """The refresh tokens sent more than once: by two processes at about the same time."""
        return {token: n for token, n in self.sent.items() if n > 1}


@pytest.fixture
async def rd() -> AsyncIterator[tuple[RDStationDouble, TokenRace, str]]:
    double = RDStationDouble(rate_limit=10_000)  # RD's per-account budget is not what this test is about
    race = TokenRace()
    double.on_token_request = race
    server = TestServer(double.app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield double, race, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def stored_chains(cluster: Cluster) -> list[dict[str, str]]:
    """The OAuth token chains the processes keep in the shared store (every `rdstation/oauth-*` scope)."""
    conn = await asyncpg.connect(f"{PG_SERVER}/{PG_DATABASE}", timeout=5)
    try:
        rows = await conn.fetch(
            f"SELECT value FROM {cluster.schema}.destination_state "
            "WHERE subscription_id LIKE 'rdstation/oauth-%' AND key = 'oauth'"
        )
    finally:
        await conn.close()
    return [json.loads(row["value"]) for row in rows]


def accepted_order_ids(double: RDStationDouble) -> Counter[str]:
    """How many times RD accepted each event (by the CloudEvents id the mapping puts in `order_id`)."""
    found: Counter[str] = Counter()
    for accepted in double.events:
        payload = accepted.get("payload")
        if isinstance(payload, dict):
            found[str(payload.get("order_id"))] += 1
    return found


async def test_processes_refreshing_one_oauth_chain_at_once_deliver_each_event_once_without_an_alert(
    clients: list[EventBusClient], cluster: Cluster, rd: tuple[RDStationDouble, TokenRace, str]
) -> None:
    double, race, rd_url = rd
    event_type = unique_type("rdoauth")
    subscription = await clients[0].create_subscription(
        "rdstation",
        patterns=[event_type],
        options={
            "base_url": rd_url,
            "client_id": double.client_id,
            "client_secret": double.client_secret,
            "refresh_token": "rd-refresh-0",
            "rate_limit_per_minute": 10_000,
            "mapping": MAPPING,
        },
        max_concurrency=3 * PER_ROUND,  # a limit for all processes: room for each one to be sending at expiry
    )
    event_ids: dict[str, str] = {}  # CloudEvents id -> event_id

    async def publish(first: int, count: int) -> None:
        """`count` events, a third through each process, the three publishes at once."""

        async def through(n: int) -> None:
            events = [
                Event.create(
                    type=event_type,
                    source="/mp/rd",
                    id=f"{event_type}-{k}",
                    data={"email": f"buyer{k}@example.com", "n": k},
                )
                for k in range(first + n, first + count, len(clients))
            ]
            if events:
                for result in await clients[n].publish(events):
                    event_ids[result.id] = result.event_id

        await asyncio.gather(*(through(n) for n in range(len(clients))))

    async def all_accepted() -> bool:
        return set(accepted_order_ids(double)) >= set(event_ids)

    try:
        for round_ in range(ROUNDS):
            # Round 0 starts with no token at all (every process exchanges the options' refresh token); later
            # rounds with every issued access token expired, so each process's next send is refused with 401.
            if round_:
                double.expire_access_tokens()
            await publish(round_ * PER_ROUND, PER_ROUND)
            await eventually(all_accepted, within=20, what=f"round {round_}: every event accepted by RD")

        # Every event reached RD exactly once, and the gateway recorded RD's acceptance of it: one attempt, which
        # succeeded with the `event_uuid` RD issued for that very event.
        assert len(event_ids) == ROUNDS * PER_ROUND
        accepted = accepted_order_ids(double)
        assert {cid: n for cid, n in accepted.items() if n != 1} == {}
        assert set(accepted) == set(event_ids)
        uuids = {str(e["payload"]["order_id"]): e["event_uuid"] for e in double.events}  # type: ignore[index]
        # The gateway records each attempt just after RD's answer: wait for every delivery to be finished.
        deliveries = await all_succeeded(clients[1], subscription.id, len(event_ids))
        retried = [(d.state, d.attempt_count, d.last_error) for d in deliveries if d.attempt_count != 1]
        assert retried == [], f"{len(retried)} deliveries needed another attempt, e.g. {retried[:3]}"
        by_event = {event_id: cid for cid, event_id in event_ids.items()}
        for listed in deliveries:
            [attempt] = (await clients[2].get_delivery(listed.delivery_id)).attempts
            assert attempt.response_body is not None
            assert json.loads(attempt.response_body)["event_uuid"] == uuids[by_event[listed.event_id]]

        # The processes did race: some refresh token was sent to RD by two of them at about the same time.
        raced = race.raced()
        shares = cluster.attempts_by_process(subscription.id)
        print(f"exchanges: {sum(race.sent.values())}, refresh tokens raced: {raced}, attempts by process: {shares}")
        assert raced, f"no two processes refreshed at once: exchanges {dict(race.sent)}"

        # No refresh was refused for good: no alert, no failure on the subscription, nothing logged about it.
        alerts, _ = await clients[0].list_events(
            patterns=["eventbus.endpoint.**", "eventbus.delivery.**"], page_size=100
        )
        ours = [e for e in alerts if e.event.json_data().get("subscription_id") == subscription.id]
        assert ours == [], [(e.event.type, e.event.json_data()) for e in ours]
        status = await clients[2].get_subscription(subscription.id)
        assert (status.state, status.health.consecutive_failures) == ("active", 0)
        for process in cluster.processes:
            assert "rdstation_token_exchange_failed" not in process.log()
            assert "Traceback" not in process.log(), process.log()[-3000:]

        # The rotation left one chain in the store, holding the one refresh token RD still accepts and a token it
        # issued; and RD accepts that refresh token: the next expiry is refreshed with it and the event delivered.
        [chain] = await stored_chains(cluster)
        assert double.refresh_tokens == {chain["refresh_token"]}, "the stored refresh token is not RD's live one"
        assert chain["access_token"] in double.access_tokens
        exchanges = double.counts["/auth/token"]
        double.expire_access_tokens()
        await publish(ROUNDS * PER_ROUND, 1)
        await eventually(all_accepted, within=20, what="the event after the last expiry accepted by RD")
        token_requests = [r for r in double.requests if r.path == "/auth/token"][exchanges:]
        assert [r.json["refresh_token"] for r in token_requests][:1] == [chain["refresh_token"]]  # type: ignore[index]
        [after] = await stored_chains(cluster)
        assert double.refresh_tokens == {after["refresh_token"]} != {chain["refresh_token"]}
    finally:
        await clients[0].delete_subscription(subscription.id)

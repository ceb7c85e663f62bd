"""The crash harness's publishers: gRPC (one event per call, and batches) and `POST /events` (structured, and
batched), each retrying an unanswered call with the same (source, id)s until it is acknowledged, as a real client
does (dedup makes the retry safe), except the `abandon` ones, which move on and leave it maybe-stored.

The ledger keeps what the checks need: every key put on the wire, every acknowledgement and its event id, what
was abandoned, and what a retried call answered (all duplicates or none: a publish is atomic).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc

from eventbus.grpc.convert import event_to_proto
from eventbus.model import Event
from eventbus.v1 import eventbus_pb2, eventbus_pb2_grpc

Key = tuple[str, str]  # (source, id): an event's identity
CALL_TIMEOUT = 10.0  # seconds one publish may take before it counts as unanswered
RETRY_PACE = 0.05  # seconds between a failed call and its retry while the server is up (PostgreSQL down)
# By n % 4: three in four match `order.*`; every even n matches the `data.even` filter.
TYPES = ("order.paid", "order.paid", "order.shipped", "audit.item.logged")
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


@dataclass(frozen=True, slots=True)
class Target:
    """One server incarnation's addresses; a new object after each restart."""

    number: int
    grpc: str
    http: str


def event_json(source: str, n: int) -> dict[str, Any]:
    """The CloudEvents JSON of publisher `source`'s n-th event."""
    return {
        "specversion": "1.0",
        "type": TYPES[n % len(TYPES)],
        "source": source,
        "id": str(n),
        "datacontenttype": "application/json",
        "data": {"n": n, "even": n % 2 == 0},
    }


def make_event(source: str, n: int) -> Event:
    return Event.create(type=TYPES[n % len(TYPES)], source=source, id=str(n), data={"n": n, "even": n % 2 == 0})


@dataclass
class Ledger:
    sent: set[Key] = field(default_factory=set)
    acked: dict[Key, str] = field(default_factory=dict)  # the event id the acknowledgement gave
    # Unanswered and not retried (the rest of sent - acked is what was in flight at the end): stored once or not at all.
    abandoned: set[Key] = field(default_factory=set)
    retried_calls: int = 0  # calls repeated after an unanswered try
    deduped_events: int = 0  # events of retried calls answered `duplicate`: the unanswered try had stored them
    violations: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # what each failed call said (the last 200), for the report
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (grpc|http, OK|code|status|error)

    def failed(self, what: str) -> None:
        self.failures.append(what)
        del self.failures[:-200]

    def record(self, keys: list[Key], answers: list[tuple[str, bool]], *, retried: bool, via: str) -> None:
        """An acknowledged call: `answers` are (event_id, duplicate) in the order of `keys`."""
        if len(answers) != len(keys):
            self.violations.append(f"{via}: {len(keys)} events published, {len(answers)} results")
            return
        duplicates = {duplicate for _, duplicate in answers}
        if retried:
            self.retried_calls += 1
            if len(duplicates) > 1:
                self.violations.append(f"{via}: a retried batch was part stored, part new: {keys[0]}..")
            elif duplicates == {True}:
                self.deduped_events += len(keys)
        elif True in duplicates:
            self.violations.append(f"{via}: a first publish of {keys[0]}.. was answered duplicate")
        for key, (event_id, _) in zip(keys, answers, strict=True):
            if self.acked.get(key, event_id) != event_id:
                self.violations.append(f"{via}: {key} acknowledged as {self.acked[key]} then {event_id}")
            self.acked[key] = event_id


class Publishers:
    """Runs the publishers against whatever incarnation `target()` names (it waits while none serves; None: stop)."""

    def __init__(self, target: Callable[[], Awaitable[Target | None]], ledger: Ledger) -> None:
        self.target = target
        self.ledger = ledger
        self.stopping = False
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self.grpc_publisher("/chaos/grpc/0", batch=1, pace=0.01)),
            asyncio.create_task(self.grpc_publisher("/chaos/grpc/1", batch=1, pace=0.01, abandon=True)),
            asyncio.create_task(self.grpc_publisher("/chaos/grpc-batch/0", batch=10, pace=0.05)),
            asyncio.create_task(self.http_publisher("/chaos/http/0", batch=1, pace=0.02)),
            asyncio.create_task(self.http_publisher("/chaos/http-batch/0", batch=10, pace=0.1)),
        ]

    async def stop(self) -> None:
        """Stop after the calls in flight; a publisher that crashed fails the run with its own error."""
        self.stopping = True
        if not self.tasks:
            return
        done, pending = await asyncio.wait(self.tasks, timeout=CALL_TIMEOUT + 10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()
        assert not pending, f"{len(pending)} publishers did not stop within {CALL_TIMEOUT + 10:g} s"

    def _failed(self, keys: list[Key], *, abandon: bool) -> bool:
        """After an unanswered call: True when the publisher moves on to new keys (abandoning these)."""
        if abandon:
            self.ledger.abandoned.update(keys)
        return abandon

    async def grpc_publisher(self, source: str, *, batch: int, pace: float, abandon: bool = False) -> None:
        channel: grpc.aio.Channel | None = None
        bound: Target | None = None
        n, retried = 0, False
        try:
            while not self.stopping and (target := await self.target()) is not None:
                if target is not bound or channel is None:
                    if channel is not None:
                        await channel.close()
                    channel, bound = grpc.aio.insecure_channel(target.grpc), target
                keys = [(source, str(n + k)) for k in range(batch)]
                self.ledger.sent.update(keys)
                events = [event_to_proto(make_event(source, n + k)) for k in range(batch)]
                request = eventbus_pb2.PublishRequest(events=events)
                try:
                    response = await eventbus_pb2_grpc.EventBusStub(channel).Publish(request, timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    self.ledger.outcomes["grpc", exc.code().name] += 1
                    self.ledger.failed(f"grpc {exc.code().name}: {exc.details()}")
                    if self._failed(keys, abandon=abandon):
                        n, retried = n + batch, False
                    else:
                        retried = True
                    await asyncio.sleep(RETRY_PACE)
                    continue
                self.ledger.outcomes["grpc", "OK"] += 1
                answers = [(r.event_id, r.duplicate) for r in response.results]
                self.ledger.record(keys, answers, retried=retried, via="grpc")
                n, retried = n + batch, False
                await asyncio.sleep(pace)  # the offered load, not a synchronisation
        finally:
            if channel is not None:
                await channel.close()

    async def http_publisher(self, source: str, *, batch: int, pace: float) -> None:
        n, retried = 0, False
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT)) as session:
            while not self.stopping and (target := await self.target()) is not None:
                keys = [(source, str(n + k)) for k in range(batch)]
                self.ledger.sent.update(keys)
                documents = [event_json(source, n + k) for k in range(batch)]
                body = json.dumps(documents[0] if batch == 1 else documents)
                headers = {"content-type": STRUCTURED if batch == 1 else BATCH}
                try:
                    async with session.post(f"http://{target.http}/events", data=body, headers=headers) as response:
                        status = response.status
                        answer = await response.json(content_type=None) if status in (200, 202) else None
                        if answer is None:
                            self.ledger.failed(f"http {status}: {(await response.text())[:300]}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, answer = 0, None
                    self.ledger.outcomes["http", type(exc).__name__] += 1
                    self.ledger.failed(f"http {type(exc).__name__}: {exc}")
                if answer is None:
                    if status:
                        self.ledger.outcomes["http", str(status)] += 1
                    if self._failed(keys, abandon=False):
                        n, retried = n + batch, False
                    else:
                        retried = True
                    await asyncio.sleep(RETRY_PACE)
                    continue
                self.ledger.outcomes["http", str(status)] += 1
                answers = [(e["event_id"], bool(e["duplicate"])) for e in answer["events"]]
                if (status == 200) != all(duplicate for _, duplicate in answers):
                    self.ledger.violations.append(f"http: {status} for duplicates {[d for _, d in answers]}")
                self.ledger.record(keys, answers, retried=retried, via="http")
                n, retried = n + batch, False
                await asyncio.sleep(pace)

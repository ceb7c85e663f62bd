"""The SQLite disk fills up under a real `eventbus serve`: every ingest path answers 503 / UNAVAILABLE (never a
success, nothing half-stored), deliveries keep their state, and ingest works again once space returns, without a
restart.

"Full" is the process's file-size limit (RLIMIT_FSIZE, set and raised from the test with prlimit): a write past
it fails with EFBIG, which SQLite reports as an I/O error exactly where a full disk would hit (WAL appends,
checkpoints). Python ignores SIGXFSZ, so the server sees the failed write, not a signal.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from eventbus.client import EventBusClient
from eventbus.errors import UnavailableError
from eventbus.model import Event
from eventbus.signing import generate_secret, sign_v1
from tests.conftest import TEST_STORE, ServerProcess, start_server_process

pytestmark = pytest.mark.skipif(TEST_STORE != "sqlite", reason="the disk that fills is the SQLite file's")

WAIT = 20.0


def files_of(tmp_path: Path, running: ServerProcess) -> list[Path]:
    db = tmp_path / "eventbus.db"
    return [db, Path(f"{db}-wal"), running.log_path]


def limit_file_size(pid: int, limit: int) -> None:
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def order(n: str) -> Event:
    return Event.create(type="order.paid", source="/disk", id=n, data={"n": n})


async def post_event(http: aiohttp.ClientSession, running: ServerProcess, event_id: str) -> aiohttp.ClientResponse:
    body = {"specversion": "1.0", "id": event_id, "source": "/disk", "type": "order.paid", "data": {}}
    async with http.post(
        f"http://{running.http}/events", json=body, headers={"Content-Type": "application/cloudevents+json"}
    ) as response:
        await response.read()
        return response


async def post_hook(
    http: aiohttp.ClientSession, running: ServerProcess, secret: str, msg_id: str
) -> aiohttp.ClientResponse:
    body = json.dumps({"type": "invoice.paid", "data": {"invoice": msg_id}}).encode()
    stamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_v1(secret, msg_id, stamp, body),
    }
    async with http.post(f"http://{running.http}/hooks/billing", data=body, headers=headers) as response:
        await response.read()
        return response


async def fill_until_refused(client: EventBusClient, size: int, most: int) -> int:
    """Publish events of `size` bytes of data until the store refuses one (at most `most`); how many fitted."""
    for n in range(most):
        ballast = Event.create(type="ballast.fill", source="/disk", id=f"ballast-{size}-{n}", data={"pad": "b" * size})
        try:
            await client.publish([ballast])
        except UnavailableError as exc:
            if "store" not in str(exc):
                raise
            return n
    raise AssertionError(f"{most} ballast events of {size} bytes fitted under the file-size limit")


async def test_a_full_disk_refuses_ingest_with_503_and_recovers_without_a_restart(
    tmp_path: Path, server_process: list[ServerProcess]
) -> None:
    running = await asyncio.to_thread(start_server_process, tmp_path, extra=["--allow-destination", "127.0.0.1/32"])
    server_process.append(running)
    secret = generate_secret()
    async with EventBusClient(running.grpc, timeout=10, publish_retries=0) as client, aiohttp.ClientSession() as http:
        await client.create_source("billing", "standardwebhooks", secrets=[secret])
        # Paused: its deliveries stay pending, so their state is what the failure must not change.
        endpoint = await client.create_subscription(patterns=["order.*"], options={"url": "http://127.0.0.1:9/hook"})
        await client.pause_subscription(endpoint.id)
        await client.publish([order("before-1"), order("before-2")])
        assert (await post_hook(http, running, secret, "msg-before")).status == 202

        limit_file_size(running.process.pid, max(p.stat().st_size for p in files_of(tmp_path, running)) + 2_000_000)
        # Fill with large events until one does not fit, then with small ones until not even those do: what is
        # left is less than one small commit (a few pages), so every write from here on fails.
        filled = 0
        for size, most in ((400_000, 60), (100, 2000)):
            filled += await fill_until_refused(client, size, most)

        # Full: every ingest path refuses, none answers a success.
        with pytest.raises(UnavailableError):
            await client.publish([order("refused-grpc")])
        response = await post_event(http, running, "refused-http")
        assert response.status == 503 and response.content_type == "application/problem+json"
        assert response.headers["Retry-After"].isdigit()
        response = await post_hook(http, running, secret, "msg-refused")
        assert response.status == 503, response.status
        async with http.get(f"http://{running.http}/readyz") as ready:
            assert ready.status == 503  # the last commit failed: not ready for more
        pending, _ = await client.list_deliveries(subscription_id=endpoint.id)
        assert sorted(d.state for d in pending) == ["pending", "pending"]

        limit_file_size(running.process.pid, resource.RLIM_INFINITY)  # space returns
        await client.publish([order("after")])  # the very next write succeeds: no restart, no retry needed
        assert (await post_event(http, running, "after-http")).status == 202
        assert (await post_hook(http, running, secret, "msg-after")).status == 202
        async with http.get(f"http://{running.http}/readyz") as ready:
            assert ready.status == 200

        ids: list[str] = []
        token = ""
        for _ in range(20):  # bounded paging
            page, token = await client.list_events(page_size=100, page_token=token)
            ids += [e.event.id for e in page]
            if not token:
                break
        assert not [i for i in ids if "refused" in i], ids  # nothing of a refused request was stored
        assert {"before-1", "before-2", "after", "after-http"} <= set(ids)
        assert len([i for i in ids if i.startswith("ballast-")]) == filled
        deliveries, _ = await client.list_deliveries(subscription_id=endpoint.id)
        assert sorted(d.state for d in deliveries) == ["pending"] * 4  # before-1, before-2, after, after-http

    running.signal(signal.SIGTERM)
    assert await asyncio.to_thread(running.wait, WAIT) == 0, running.log()[-3000:]

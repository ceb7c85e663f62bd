"""`Idempotency-Key` on REST POSTs: the same key and body get the same answer and the operation runs once; another
body under the key is refused (422); keys are per caller; a refused request does not keep its key; keys expire
after 24 h (the manual clock), and expired ones are pruned from the store."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from eventbus.auth import Scope
from eventbus.clock import ManualClock
from eventbus.runtime import EventBusServer
from eventbus.store.idempotency import idempotency_store_of
from eventbus.store.postgres.core import parse_url
from tests.conftest import store_url
from tests.delivery.helpers import MakeReceiver, Receiver, create_endpoint
from tests.rest.helpers import ADMIN_KEY, Reply, Rest, encode, ok, problem

DAY = timedelta(hours=24)


def endpoint(hook: Receiver, n: int = 0) -> dict[str, Any]:
    return {"url": f"{hook.url}/{n}", "patterns": ["order.*"]}


async def create(rest: Rest, body: dict[str, Any], key: str, path: str = "/v1/endpoints") -> Reply:
    return await rest.post(path, body, headers={"Idempotency-Key": key})


async def count_endpoints(server: EventBusServer) -> int:
    found, _ = await server.services.subscriptions.list_page(kind="webhook", page_size=1000)
    return len(found)


async def stored_rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows read straight from the test's store (no store method shows stored idempotency keys), on either backend."""
    url = store_url(tmp_path)
    if url.startswith("sqlite:"):
        with sqlite3.connect(tmp_path / "eventbus.db") as db:
            return db.execute(sql).fetchall()
    dsn, schema, _ = parse_url(url)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema or "public"})
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def run_sql(tmp_path: Path, sqlite: str, postgres: tuple[str, ...]) -> None:
    """Change the test's store behind the server's back (a trigger here), on either backend."""
    url = store_url(tmp_path)
    if url.startswith("sqlite:"):
        with sqlite3.connect(tmp_path / "eventbus.db") as db:
            db.execute(sqlite)
        return
    dsn, schema, _ = parse_url(url)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema or "public"})
    try:
        for statement in postgres:
            await conn.execute(statement)
    finally:
        await conn.close()


async def refuse_answers(tmp_path: Path) -> None:
    """From now on the store refuses to keep an answer (the write fails as on a full disk); claims still work."""
    await run_sql(
        tmp_path,
        "CREATE TRIGGER refuse_answers BEFORE UPDATE ON idempotency_keys WHEN NEW.status IS NOT NULL "
        "BEGIN SELECT RAISE(ABORT, 'no space left (test)'); END",
        (
            "CREATE FUNCTION refuse_answers() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'no space left (test)'; END $$",
            "CREATE TRIGGER refuse_answers BEFORE UPDATE ON idempotency_keys FOR EACH ROW "
            "WHEN (NEW.status IS NOT NULL) EXECUTE FUNCTION refuse_answers()",
        ),
    )


async def stored_keys(tmp_path: Path) -> int:
    [(count,)] = await stored_rows(tmp_path, "SELECT count(*) FROM idempotency_keys")
    return int(count)


async def test_the_same_key_and_body_get_the_same_answer_and_run_once(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    first = await create(rest, endpoint(hook), "create-1")
    created = ok(first, 201)
    assert "Idempotent-Replayed" not in first.headers

    again = await create(rest, endpoint(hook), "create-1")
    replayed = ok(again, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content_type == "application/json"
    assert await count_endpoints(server) == 1
    # The same answer, but a secret is shown once: the replay does not reveal it again.
    assert replayed["revealed"] == {"secret": "[shown once]"}
    assert {**replayed, "revealed": None} == {**created, "revealed": None}

    other = ok(await create(rest, endpoint(hook), "create-2"), 201)  # another key: another endpoint
    assert other["id"] != created["id"] and await count_endpoints(server) == 2
    plain = ok(await rest.post("/v1/endpoints", endpoint(hook)), 201)  # no key: every call runs
    assert plain["id"] not in (created["id"], other["id"])


async def test_a_publish_under_the_same_key_is_stored_once_and_answered_as_first(
    server: EventBusServer, rest: Rest
) -> None:
    body = {"events": [{"specversion": "1.0", "id": "o-1", "source": "/shop", "type": "order.paid", "data": {}}]}
    publisher = rest.with_key((await server.services.api_keys.create([Scope.PUBLISH])).key)
    first = await create(publisher, body, "publish-1", "/v1/events")
    assert first.status == 201 and first.json["events"][0]["duplicate"] is False
    again = await create(publisher, body, "publish-1", "/v1/events")
    # The first answer again (201, not a duplicate), not a second publish that dedup would answer with 200.
    assert (again.status, again.body, again.headers["Idempotent-Replayed"]) == (201, first.body, "true")
    stored, _ = await server.bus.list_events()
    assert [s.event.id for s in stored] == ["o-1"]


async def test_the_same_key_with_another_body_is_refused(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    ok(await create(rest, endpoint(hook, 1), "k"), 201)
    refused = problem(await create(rest, endpoint(hook, 2), "k"), 422)
    assert "Idempotency-Key" in refused["detail"]
    assert refused["type"].endswith("/idempotency-key-reused")
    assert await count_endpoints(server) == 1
    # Another path is another operation: the key is free there.
    assert (await create(rest, {"name": "billing", "connector": "standardwebhooks"}, "k", "/v1/sources")).status == 201


async def test_keys_of_different_callers_are_independent(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    other = rest.with_key((await server.services.api_keys.create([Scope.ADMIN], name="second")).key)
    mine = ok(await create(rest, endpoint(hook), "shared"), 201)
    theirs = await create(other, endpoint(hook), "shared")
    assert ok(theirs, 201)["id"] != mine["id"] and "Idempotent-Replayed" not in theirs.headers
    assert await count_endpoints(server) == 2
    # Each caller's key still replays for that caller only.
    assert ok(await create(other, endpoint(hook), "shared"), 201)["id"] == ok(theirs, 201)["id"]
    assert ok(await create(rest, endpoint(hook), "shared"), 201)["id"] == mine["id"]
    problem(await create(other, endpoint(hook, 9), "shared"), 422)


async def test_a_refused_request_does_not_keep_its_key(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    bad = {"url": hook.url, "rate_limit": -1}
    problem(await create(rest, bad, "retry-me"), 400, "rate_limit")
    problem(await create(rest, bad, "retry-me"), 400, "rate_limit")  # refused again, neither replayed nor 422
    problem(
        await rest.post(
            "/v1/endpoints", body=b"{", content_type="application/json", headers={"Idempotency-Key": "retry-me"}
        ),
        400,
        "body",
    )
    problem(
        await rest.post(
            "/v1/endpoints", body=b"{}", content_type="text/plain", headers={"Idempotency-Key": "retry-me"}
        ),
        415,
    )
    fixed = await create(rest, endpoint(hook), "retry-me")  # the corrected request under the same key runs
    assert fixed.status == 201 and "Idempotent-Replayed" not in fixed.headers
    assert await count_endpoints(server) == 1


async def test_keys_expire_after_24_hours(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    first = ok(await create(rest, endpoint(hook), "daily"), 201)
    clock.advance(DAY)
    assert ok(await create(rest, endpoint(hook), "daily"), 201)["id"] == first["id"]  # 24 h: still held
    clock.advance(timedelta(seconds=1))
    renewed = await create(rest, endpoint(hook), "daily")
    assert ok(renewed, 201)["id"] != first["id"] and "Idempotent-Replayed" not in renewed.headers
    assert await count_endpoints(server) == 2
    clock.advance(DAY + timedelta(seconds=1))
    assert (await create(rest, endpoint(hook, 2), "daily")).status == 201  # another body: free after expiry


async def test_the_key_itself_is_checked(rest: Rest, receiver: MakeReceiver) -> None:
    hook = await receiver()
    problem(await create(rest, endpoint(hook), "x" * 256), 400, "Idempotency-Key")
    assert (await create(rest, endpoint(hook), "x" * 255)).status == 201


async def test_a_key_still_being_answered_is_a_conflict(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    """A second request while the first is in flight (its claim made here, as the server makes it): 409."""
    hook = await receiver()
    body = endpoint(hook)
    encoded = encode(body)  # as `Rest.post` sends it, so the digests match
    scope = f"{hashlib.sha256(f'Bearer {ADMIN_KEY}'.encode()).hexdigest()[:32]} POST /v1/endpoints"
    store = idempotency_store_of(server.store)
    now = server.bus.clock.now()
    held = await store.claim_idempotency_key(
        scope, "busy", hashlib.sha256(encoded).hexdigest(), now=now, expires_before=now - DAY, stale_before=now
    )
    assert held is None
    problem(await create(rest, body, "busy"), 409)
    assert await count_endpoints(server) == 0


async def test_a_claim_left_by_a_dead_request_is_taken_over_after_five_minutes(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    body = endpoint(hook)
    scope = f"{hashlib.sha256(f'Bearer {ADMIN_KEY}'.encode()).hexdigest()[:32]} POST /v1/endpoints"
    store = idempotency_store_of(server.store)
    now = server.bus.clock.now()
    digest = hashlib.sha256(encode(body)).hexdigest()
    assert (
        await store.claim_idempotency_key(scope, "died", digest, now=now, expires_before=now - DAY, stale_before=now)
        is None
    )
    clock.advance(timedelta(minutes=4))
    problem(await create(rest, body, "died"), 409)  # it may still be running
    clock.advance(timedelta(minutes=2))
    assert ok(await create(rest, body, "died"), 201)  # its process died with it: the retry runs
    assert await count_endpoints(server) == 1


async def test_an_answer_the_store_cannot_keep_is_given_and_the_key_freed(
    server: EventBusServer, rest: Rest, tmp_path: Path
) -> None:
    """The publish ran, so its answer goes out; the key is released rather than left claimed without an answer
    (which made every retry a 409 for 5 minutes): a retry runs again, and dedup answers it."""
    body = {"events": [{"specversion": "1.0", "id": "o-1", "source": "/shop", "type": "order.paid", "data": {}}]}
    await refuse_answers(tmp_path)
    first = await create(rest, body, "unkept", "/v1/events")
    assert first.status == 201, first.text
    assert first.json["events"][0]["duplicate"] is False
    assert await stored_keys(tmp_path) == 0
    again = await create(rest, body, "unkept", "/v1/events")
    assert again.status == 200, again.text  # ran again: every event a duplicate, not a 409
    assert "Idempotent-Replayed" not in again.headers
    assert again.json["events"][0]["event_id"] == first.json["events"][0]["event_id"]
    stored, _ = await server.bus.list_events()
    assert [s.event.id for s in stored] == ["o-1"]


async def test_every_post_honours_the_key_so_a_retried_rotation_rotates_once(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    info = await create_endpoint(server, hook)
    path = f"/v1/subscriptions/{info.subscription.id}/rotate-secret"
    first = await rest.post(path, headers={"Idempotency-Key": "rotate-1"})
    again = await rest.post(path, headers={"Idempotency-Key": "rotate-1"})
    assert (again.status, again.headers.get("Idempotent-Replayed")) == (200, "true")
    assert ok(again)["revealed"] == {"secret": "[shown once]"} and ok(first)["revealed"]["secret"].startswith("whsec_")
    stored = await server.services.subscriptions.find(info.subscription.id)
    assert len(stored.secrets["keys"]) == 2  # the new secret and the one it replaced: one rotation


async def test_the_store_prunes_expired_keys_only(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver, clock: ManualClock, tmp_path: Path
) -> None:
    hook = await receiver()
    ok(await create(rest, endpoint(hook, 1), "old"), 201)
    clock.advance(DAY + timedelta(seconds=1))
    ok(await create(rest, endpoint(hook, 2), "new"), 201)
    assert await stored_keys(tmp_path) == 2
    store = idempotency_store_of(server.store)
    assert await store.prune_idempotency_keys(older_than=clock.now() - DAY, limit=100) == 1
    assert await stored_keys(tmp_path) == 1
    assert ok(await create(rest, endpoint(hook, 2), "new"), 201)  # the fresh key still replays
    assert await count_endpoints(server) == 2


async def test_upkeep_prunes_expired_keys(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver, clock: ManualClock, tmp_path: Path
) -> None:
    hook = await receiver()
    ok(await create(rest, endpoint(hook), "old"), 201)
    clock.advance(DAY + timedelta(seconds=1))
    await server.bus.run_upkeep()
    assert await stored_keys(tmp_path) == 0


async def test_a_new_api_key_is_never_kept_for_a_replay(rest: Rest, tmp_path: Path) -> None:
    first = ok(await rest.post("/v1/keys", {"scopes": ["publish"]}, headers={"Idempotency-Key": "key-1"}), 201)
    assert first["key"].startswith("ebk_")
    again = ok(await rest.post("/v1/keys", {"scopes": ["publish"]}, headers={"Idempotency-Key": "key-1"}), 201)
    assert (again["id"], again["key"]) == (first["id"], "[shown once]")
    kept = b"".join(bytes(body) for (body,) in await stored_rows(tmp_path, "SELECT body FROM idempotency_keys"))
    assert first["key"].encode() not in kept and b"[shown once]" in kept

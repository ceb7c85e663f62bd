"""REST subscriptions and endpoints: create (the secret shown once, never again), list by kind and page by page,
get, change, delete, pause/resume/enable, rotate the secret; every answer against the service layer's state."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import standardwebhooks

from eventbus.bus.groups import JoinRequest
from eventbus.bus.subscriptions import SubscriptionInput
from eventbus.model import format_rfc3339
from eventbus.runtime import EventBusServer
from eventbus.store.base import Subscription, SubscriptionState
from tests.delivery.helpers import MakeReceiver, eventually, order, publish
from tests.rest.conftest import Memo
from tests.rest.helpers import Rest, conforms, ok, problem, walk

SUBSCRIPTION = "/v1/subscriptions/{subscription_id}"


def path(subscription_id: str, action: str = "") -> str:
    return f"/v1/subscriptions/{subscription_id}" + (f"/{action}" if action else "")


def assert_shows(shown: dict[str, Any], stored: Subscription) -> None:
    """The JSON view says what the store holds."""
    assert shown["id"] == stored.id
    assert shown["kind"] == stored.kind
    assert shown["patterns"] == list(stored.patterns)
    assert shown["filter"] == stored.filter_json
    assert shown["state"] == stored.state
    assert shown["state_reason"] == stored.state_reason
    assert shown["retry_schedule"] == [d.total_seconds() for d in stored.retry_schedule]
    assert shown["rate_limit"] == stored.rate_limit
    assert shown["max_concurrency"] == stored.max_concurrency
    assert shown["max_pending_age"] == stored.max_pending_age.total_seconds()
    assert shown["ordering"] == stored.ordering.value
    assert shown["created_at"] == format_rfc3339(stored.created_at)
    assert shown["health"]["circuit"] == stored.health.circuit


async def test_create_a_webhook_subscription_shows_its_secret_once(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    body = {
        "kind": "webhook",
        "patterns": ["order.*"],
        "filter": '{"data.total": {"$gte": 10}}',
        "options": {"url": hook.url, "headers": {"X-Team": "shop"}},
        "retry_schedule": [5, 60],
        "rate_limit": 10,
        "max_concurrency": 3,
        "max_pending_age": 3600,
        "ordering": "subject",
    }
    created = conforms(await rest.post("/v1/subscriptions", body), "POST", "/v1/subscriptions")

    stored = await server.services.subscriptions.find(created["id"])
    assert_shows(created, stored)
    assert (stored.kind, stored.patterns, stored.ordering.value) == ("webhook", ("order.*",), "subject")
    assert stored.retry_schedule == (timedelta(seconds=5), timedelta(seconds=60))
    assert (stored.rate_limit, stored.max_concurrency, stored.max_pending_age) == (10, 3, timedelta(hours=1))
    assert created["options"]["url"] == hook.url
    assert created["options"]["headers"] == {"x-team": "shop"}  # header names are kept lower-case
    secret = created["revealed"]["secret"]
    assert secret.startswith("whsec_")
    assert [k["secret"] for k in stored.secrets["keys"]] == [secret]
    assert created["stats"] == {"pending": 0, "leased": 0, "succeeded": 0, "dead": 0, "oldest_pending_at": None}

    # Never again: not in the subscription, the listings, nor anywhere in their text.
    for reply in (
        await rest.get(path(created["id"])),
        await rest.get("/v1/subscriptions"),
        await rest.get("/v1/endpoints"),
    ):
        assert reply.status == 200
        assert secret not in reply.text and secret.removeprefix("whsec_") not in reply.text
    assert ok(await rest.get(path(created["id"])))["revealed"] == {}


async def test_create_a_subscription_of_a_plugin_kind(server: EventBusServer, rest: Rest, memo: Memo) -> None:
    created = ok(await rest.post("/v1/subscriptions", {"kind": "memo", "options": {"account": "acme"}}), 201)
    stored = await server.services.subscriptions.find(created["id"])
    assert_shows(created, stored)
    assert (created["kind"], created["options"], created["revealed"]) == ("memo", {"account": "acme"}, {})
    assert created["patterns"] == ["**"]  # every type by default

    missing = problem(await rest.post("/v1/subscriptions", {"kind": "memo", "options": {}}), 400, "options.account")
    assert "account" in missing["errors"][0]["detail"]
    problem(await rest.post("/v1/subscriptions", {"kind": "nope"}), 400, "kind")
    problem(await rest.post("/v1/subscriptions", {"kind": "grpc"}), 400, "kind")  # groups are joined, not created
    problem(await rest.post("/v1/subscriptions", {"patterns": ["a.*"]}), 400, "kind")


async def test_create_an_endpoint_shows_its_secret_once_and_it_signs_the_deliveries(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    body = {"url": hook.url, "patterns": ["order.*"], "headers": {"X-Team": "shop"}, "format": "standard"}
    reply = await rest.post("/v1/endpoints", body)
    created = conforms(reply, "POST", "/v1/endpoints")
    assert reply.status == 201
    stored = await server.services.subscriptions.find(created["id"])
    assert_shows(created, stored)
    assert created["kind"] == "webhook"
    assert created["options"]["url"] == hook.url and created["options"]["format"] == "standard"
    secret = created["revealed"]["secret"]

    [published] = await publish(server, order(1))
    [request] = await hook.wait_for(1)
    verified = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    assert verified["data"] == {"n": 1}
    assert request.webhook_id == published.event_id

    listed = await walk(rest, "/v1/endpoints", page_size=10)
    assert [e["id"] for e in listed] == [created["id"]]
    assert listed[0]["revealed"] == {}
    assert secret not in (await rest.get(path(created["id"]))).text

    given = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="  # base64 of 26 bytes
    chosen = ok(await rest.post("/v1/endpoints", {"url": hook.url, "secret": given}), 201)
    assert chosen["revealed"] == {"secret": given}
    problem(await rest.post("/v1/endpoints", {"url": hook.url, "secret": "plain"}), 400, "options.secret")
    problem(await rest.post("/v1/endpoints", {"patterns": ["a.*"]}), 400, "options.url")
    problem(await rest.post("/v1/endpoints", {"url": "http://10.1.2.3/hook"}), 400, "options.url")  # SSRF guard


async def test_list_filters_by_kind_and_walks_every_subscription_once(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    subscriptions = server.services.subscriptions
    webhooks = [
        (await subscriptions.create(SubscriptionInput(options={"url": f"{hook.url}/{n}"}))).subscription.id
        for n in range(5)
    ]
    memos = [
        (await subscriptions.create(SubscriptionInput(kind="memo", options={"account": str(n)}))).subscription.id
        for n in range(2)
    ]
    session = await server.services.groups.join(JoinRequest(group="billing"))  # a consumer group is no subscription
    await session.close()

    everything = await walk(rest, "/v1/subscriptions", page_size=2)
    assert sorted(s["id"] for s in everything) == sorted(webhooks + memos)
    assert len(everything) == len({s["id"] for s in everything})
    only_webhooks = await walk(rest, "/v1/subscriptions", page_size=3, params={"kind": "webhook"})
    assert [s["id"] for s in only_webhooks] == sorted(webhooks)
    assert {s["kind"] for s in only_webhooks} == {"webhook"}
    only_memos = await walk(rest, "/v1/subscriptions", page_size=1, params={"kind": "memo"})
    assert [s["id"] for s in only_memos] == sorted(memos)
    assert await walk(rest, "/v1/subscriptions", page_size=5, params={"kind": "nothing"}) == []
    assert [e["id"] for e in await walk(rest, "/v1/endpoints", page_size=4)] == sorted(webhooks)

    for listed in everything:  # each as the service layer holds it
        assert_shows(listed, await subscriptions.find(listed["id"]))
    first = ok(await rest.get("/v1/subscriptions", params={"page_size": "2"}))
    assert len(first["items"]) == 2 and first["next_page_token"]
    default = ok(await rest.get("/v1/subscriptions"))  # no page_size: up to 100
    assert len(default["items"]) == 7 and default["next_page_token"] == ""
    problem(await rest.get("/v1/subscriptions", params={"kind": "grpc"}), 400, "kind")


async def test_get_one_subscription_with_its_health_and_counts(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    info = await server.services.subscriptions.create(
        SubscriptionInput(patterns=["order.*"], options={"url": hook.url})
    )
    await publish(server, order(1))
    await hook.wait_for(1)

    async def succeeded() -> dict[str, Any]:
        shown = conforms(await rest.get(path(info.subscription.id)), "GET", SUBSCRIPTION)
        return shown if shown["stats"]["succeeded"] == 1 else {}

    shown = await eventually(succeeded, what="the delivery counted as succeeded")
    assert_shows(shown, await server.services.subscriptions.find(info.subscription.id))
    stats = await server.store.subscription_stats(info.subscription.id)
    assert shown["stats"]["pending"] == stats.pending and shown["stats"]["dead"] == stats.dead
    assert shown["health"] == {
        "circuit": "closed",
        "consecutive_failures": 0,
        "failing_since": None,
        "circuit_opened_at": None,
        "next_probe_at": None,
    }

    problem(await rest.get(path("sub_0000000000000000000000000")), 404)
    problem(await rest.get(path("nonsense")), 404)
    group = await server.services.groups.join(JoinRequest(group="billing"))
    await group.close()
    problem(await rest.get(path(group.subscription.id)), 404)  # a consumer group is under /v1/groups


async def test_patch_changes_the_settings_given_and_keeps_the_rest(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    info = await server.services.subscriptions.create(
        SubscriptionInput(patterns=["order.*"], options={"url": hook.url, "headers": {"X-A": "1"}}, rate_limit=5)
    )
    sub_id = info.subscription.id
    secret = info.revealed["secret"]

    changed = conforms(
        await rest.patch(path(sub_id), {"patterns": ["invoice.*", "order.paid"], "max_concurrency": 2}),
        "PATCH",
        SUBSCRIPTION,
    )
    stored = await server.services.subscriptions.find(sub_id)
    assert_shows(changed, stored)
    assert stored.patterns == ("invoice.*", "order.paid")
    assert (stored.max_concurrency, stored.rate_limit) == (2, 5)  # rate_limit kept
    assert changed["revealed"] == {}

    changed = ok(await rest.patch(path(sub_id), {"options": {"headers": {"X-B": "2"}}, "rate_limit": 0}))
    stored = await server.services.subscriptions.find(sub_id)
    assert stored.options["url"] == hook.url and stored.options["headers"] == {"x-b": "2"}
    assert stored.rate_limit is None and changed["rate_limit"] is None  # 0 removes the limit
    assert [k["secret"] for k in stored.secrets["keys"]] == [secret]  # options merged: the secret stays

    same = ok(await rest.patch(path(sub_id), {}))  # nothing to change
    assert same["patterns"] == ["invoice.*", "order.paid"]
    problem(await rest.patch(path(sub_id), {"kind": "memo"}), 400, "kind")  # not a setting that changes
    problem(await rest.patch(path(sub_id), {"patterns": "order.*"}), 400, "patterns")
    problem(await rest.patch(path(sub_id), {"retry_schedule": [0.5]}), 400, "retry_schedule[0]")
    problem(await rest.patch(path(sub_id), {"max_pending_age": 1}), 400, "max_pending_age")
    problem(await rest.patch(path(sub_id), {"options": {"url": "ftp://x"}}), 400, "options.url")
    problem(await rest.patch(path("sub_0000000000000000000000000"), {"rate_limit": 1}), 404)


async def test_delete_answers_204_then_the_subscription_is_gone(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    info = await server.services.subscriptions.create(SubscriptionInput(options={"url": hook.url}))
    sub_id = info.subscription.id

    reply = await rest.delete(path(sub_id))
    assert conforms(reply, "DELETE", SUBSCRIPTION) is None and reply.status == 204
    problem(await rest.get(path(sub_id)), 404)
    problem(await rest.delete(path(sub_id)), 404)
    problem(await rest.post(path(sub_id, "pause")), 404)
    assert ok(await rest.get("/v1/subscriptions"))["items"] == []
    found = await server.store.get_subscription(sub_id)
    assert found is None or found.state == "deleted"


async def test_pause_resume_and_enable(server: EventBusServer, rest: Rest, receiver: MakeReceiver) -> None:
    hook = await receiver()
    info = await server.services.subscriptions.create(SubscriptionInput(options={"url": hook.url}))
    sub_id = info.subscription.id
    subscriptions = server.services.subscriptions

    paused = conforms(await rest.post(path(sub_id, "pause")), "POST", SUBSCRIPTION + "/pause")
    assert paused["state"] == "paused" == (await subscriptions.find(sub_id)).state
    assert (
        ok(await rest.post(path(sub_id, "pause"), {}))["state"] == "paused"
    )  # `{}` is a body too; pausing twice is fine
    resumed = conforms(await rest.post(path(sub_id, "resume")), "POST", SUBSCRIPTION + "/resume")
    assert resumed["state"] == "active" == (await subscriptions.find(sub_id)).state

    await subscriptions.set_state(sub_id, SubscriptionState.DISABLED, "the endpoint answered 410 Gone")
    disabled = ok(await rest.get(path(sub_id)))
    assert (disabled["state"], disabled["state_reason"]) == ("disabled", "the endpoint answered 410 Gone")
    enabled = conforms(await rest.post(path(sub_id, "enable")), "POST", SUBSCRIPTION + "/enable")
    assert enabled["state"] == "active" == (await subscriptions.find(sub_id)).state
    assert_shows(enabled, await subscriptions.find(sub_id))

    problem(await rest.post(path(sub_id, "pause"), {"reason": "x"}), 400, "reason")  # these take no fields
    for action in ("pause", "resume", "enable"):
        problem(await rest.post(path("sub_0000000000000000000000000", action)), 404)


async def test_rotate_secret_shows_the_new_secret_once_and_both_sign_for_a_while(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver, memo: Memo
) -> None:
    hook = await receiver()
    info = await server.services.subscriptions.create(
        SubscriptionInput(patterns=["order.*"], options={"url": hook.url})
    )
    sub_id, old = info.subscription.id, str(info.revealed["secret"])

    rotated = conforms(await rest.post(path(sub_id, "rotate-secret")), "POST", SUBSCRIPTION + "/rotate-secret")
    new = rotated["revealed"]["secret"]
    assert new.startswith("whsec_") and new != old
    stored = await server.services.subscriptions.find(sub_id)
    keys = stored.secrets["keys"]
    assert [k["secret"] for k in keys] == [new, old]
    assert keys[0]["expires_at"] is None and keys[1]["expires_at"] is not None
    assert rotated["options"]["previous_secret_expires_at"] == keys[1]["expires_at"]
    assert new not in (await rest.get(path(sub_id))).text

    await publish(server, order(1))
    [request] = await hook.wait_for(1)
    for secret in (new, old):  # during the grace both sign
        standardwebhooks.Webhook(secret).verify(request.body, request.headers)

    given = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    chosen = ok(await rest.post(path(sub_id, "rotate-secret"), {"secret": given}))
    assert chosen["revealed"] == {"secret": given}
    problem(await rest.post(path(sub_id, "rotate-secret"), {"secret": "short"}), 400, "secret")
    problem(await rest.post(path(sub_id, "rotate-secret"), {"secret": 5}), 400, "secret")
    problem(await rest.post(path("sub_0000000000000000000000000", "rotate-secret")), 404)
    other = await server.services.subscriptions.create(SubscriptionInput(kind="memo", options={"account": "a"}))
    problem(await rest.post(path(other.subscription.id, "rotate-secret")), 409)  # no signing secret to rotate

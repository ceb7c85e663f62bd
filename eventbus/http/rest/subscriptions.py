"""REST: subscriptions of every push kind (webhook endpoints included), their deliveries, replay and "why"."""

from __future__ import annotations

from collections.abc import Mapping

from eventbus.auth import Scope
from eventbus.bus.deliveries import EventRef
from eventbus.bus.subscriptions import SubscriptionInput
from eventbus.errors import InvalidArgumentError
from eventbus.http.rest import params as p
from eventbus.http.rest.api import JSON, Answer, Api, Call, Param
from eventbus.http.rest.views import (
    DELIVERY,
    DELIVERY_WITH_ATTEMPTS,
    EXPLANATION,
    SUBSCRIPTION,
    delivery_view,
    explanation_view,
    obj,
    page_of,
    subscription_view,
)

SETTINGS: JSON = {
    "patterns": {**p.STRINGS, "description": "type patterns (default every type)"},
    "filter": {"type": ["string", "null"], "description": 'a content filter, as JSON text ("" removes it)'},
    "options": {"type": "object", "description": "the kind's options (a webhook: url, headers, format, ...)"},
    "retry_schedule": {"type": "array", "items": p.SECONDS, "maxItems": 30, "description": "delays, seconds"},
    "rate_limit": {"type": "number", "minimum": 0, "maximum": 10000, "description": "deliveries/s (0: none)"},
    "max_concurrency": {"type": "integer", "minimum": 0, "maximum": 100},
    "max_pending_age": {**p.SECONDS, "description": "seconds; older pending deliveries die (expired)"},
}
CREATE = p.body_schema(
    {
        "kind": {"type": "string", "description": "webhook, or a plugin destination kind"},
        **SETTINGS,
        "ordering": {"type": "string", "enum": ["none", "subject"]},
        "paused": {"type": "boolean"},
    },
    required=["kind"],
)
ENDPOINT = p.body_schema(
    {
        "url": {"type": "string"},
        "secret": {"type": "string", "description": "whsec_... (default: generated, shown once)"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "format": {"type": "string", "enum": ["standard", "cloudevents-structured", "cloudevents-binary", "raw"]},
        "timeout": {"type": "number", "minimum": 1, "maximum": 60},
        **{k: v for k, v in SETTINGS.items() if k != "options"},
        "ordering": {"type": "string", "enum": ["none", "subject"]},
        "paused": {"type": "boolean"},
    },
    required=["url"],
)
UPDATE = p.body_schema(SETTINGS)
ID = "subscription_id"


def _input(body: JSON, *, kind: str = "webhook", options: dict[str, object] | None = None) -> SubscriptionInput:
    """A create (with `kind`) or an update: the settings the body gives, None for the rest."""
    return SubscriptionInput(
        kind=kind,
        patterns=p.texts(body, "patterns"),
        filter=p.text(body, "filter"),
        options=options,
        retry_schedule=p.durations(body, "retry_schedule"),
        rate_limit=p.number(body, "rate_limit"),
        max_concurrency=p.integer(body, "max_concurrency"),
        max_pending_age=p.duration(body, "max_pending_age"),
        ordering=p.text(body, "ordering"),
        paused=bool(p.flag(body, "paused")),
    )


async def _page_of_kind(call: Call, kind: str | None) -> Answer:
    size, token = p.page(call)
    found, next_token = await call.services.subscriptions.list_page(kind=kind, page_size=size, page_token=token)
    return Answer(200, {"items": [subscription_view(i) for i in found], "next_page_token": next_token})


def _newest_first(call: Call) -> bool:
    order = call.query("order") or "oldest"
    if order not in ("oldest", "newest"):
        raise InvalidArgumentError.for_field("order", "oldest or newest")
    return order == "newest"


def _event_ref(call: Call) -> EventRef:
    event_id, source, id = call.query("event_id"), call.query("source"), call.query("id")
    if not event_id and not (source and id):
        # Named here: the service layer names the fields as gRPC has them (`source_id.id`).
        missing = "id" if source else "source" if id else "event_id"
        raise InvalidArgumentError.for_field(missing, "give event_id, or both source and id")
    return EventRef(event_id=event_id or "", source=source or "", id=id or "")


def add(api: Api) -> None:
    subscription = api.component("Subscription", SUBSCRIPTION)
    delivery = api.component("Delivery", DELIVERY)
    detailed = api.component("DeliveryWithAttempts", DELIVERY_WITH_ATTEMPTS)
    explanation = api.component("Explanation", EXPLANATION)
    one = {200: ("The subscription.", subscription)}
    tag = "subscriptions"

    @api.operation(
        "GET",
        "/v1/subscriptions",
        operation_id="listSubscriptions",
        summary="Subscriptions of every push kind",
        tag=tag,
        access=Scope.ADMIN,
        query=(Param("kind", {"type": "string"}, "only this kind"), *p.PAGE_PARAMS),
        responses={200: ("A page of subscriptions.", page_of(subscription))},
    )
    async def list_subscriptions(call: Call) -> Answer:
        return await _page_of_kind(call, call.query("kind") or None)

    @api.operation(
        "POST",
        "/v1/subscriptions",
        operation_id="createSubscription",
        reveals=("revealed",),
        summary="Create a subscription of any kind",
        tag=tag,
        access=Scope.ADMIN,
        body=CREATE,
        idempotent=True,
        responses={201: ("Created; `revealed` holds a generated secret, shown this once.", subscription)},
    )
    async def create_subscription(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, list(CREATE["properties"]))
        spec = _input(body, kind=p.text(body, "kind", required=True) or "", options=p.mapping(body, "options"))
        return Answer(201, subscription_view(await call.services.subscriptions.create(spec)))

    @api.operation(
        "GET",
        "/v1/endpoints",
        operation_id="listEndpoints",
        summary="Webhook endpoints (subscriptions of kind webhook)",
        tag="endpoints",
        access=Scope.ADMIN,
        query=p.PAGE_PARAMS,
        responses={200: ("A page of endpoints.", page_of(subscription))},
    )
    async def list_endpoints(call: Call) -> Answer:
        return await _page_of_kind(call, "webhook")

    @api.operation(
        "POST",
        "/v1/endpoints",
        operation_id="createEndpoint",
        reveals=("revealed",),
        summary="Create a webhook endpoint (its other operations are under /v1/subscriptions/{subscription_id})",
        tag="endpoints",
        access=Scope.ADMIN,
        body=ENDPOINT,
        idempotent=True,
        responses={201: ("Created; `revealed.secret` is the signing secret, shown this once.", subscription)},
    )
    async def create_endpoint(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, list(ENDPOINT["properties"]))
        options = {k: body[k] for k in ("url", "secret", "headers", "format", "timeout") if body.get(k) is not None}
        return Answer(201, subscription_view(await call.services.subscriptions.create(_input(body, options=options))))

    @api.operation(
        "GET",
        "/v1/subscriptions/{subscription_id}",
        operation_id="getSubscription",
        summary="One subscription: state, health and circuit, counts",
        tag=tag,
        access=Scope.ADMIN,
        responses=one,
    )
    async def get_subscription(call: Call) -> Answer:
        return Answer(200, subscription_view(await call.services.subscriptions.get(call.path(ID))))

    @api.operation(
        "PATCH",
        "/v1/subscriptions/{subscription_id}",
        operation_id="updateSubscription",
        summary="Change the settings given; the rest stay",
        tag=tag,
        access=Scope.ADMIN,
        body=UPDATE,
        responses=one,
    )
    async def update_subscription(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, list(UPDATE["properties"]))
        spec = _input(body, options=p.mapping(body, "options"))
        return Answer(200, subscription_view(await call.services.subscriptions.update(call.path(ID), spec)))

    @api.operation(
        "DELETE",
        "/v1/subscriptions/{subscription_id}",
        operation_id="deleteSubscription",
        summary="Delete it: no more deliveries",
        tag=tag,
        access=Scope.ADMIN,
        responses={204: ("Deleted.", None)},
    )
    async def delete_subscription(call: Call) -> Answer:
        await call.services.subscriptions.delete(call.path(ID))
        return Answer(204)

    for action, summary in (
        ("pause", "Hold its deliveries"),
        ("resume", "Active again (from paused or disabled); held deliveries go at once"),
        ("enable", "The same as resume"),
    ):
        _add_state_action(api, action, summary, one)

    @api.operation(
        "POST",
        "/v1/subscriptions/{subscription_id}/rotate-secret",
        operation_id="rotateSubscriptionSecret",
        reveals=("revealed",),
        summary="A new signing secret; the previous one keeps signing 24 h",
        tag=tag,
        access=Scope.ADMIN,
        body=p.body_schema({"secret": {"type": "string"}}),
        body_required=False,
        responses={200: ("Rotated; `revealed.secret` is the new secret, shown this once.", subscription)},
    )
    async def rotate_secret(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, ["secret"])
        info = await call.services.subscriptions.rotate_secret(call.path(ID), p.text(body, "secret"))
        return Answer(200, subscription_view(info))

    @api.operation(
        "POST",
        "/v1/subscriptions/{subscription_id}/recover",
        operation_id="recoverSubscription",
        summary="Re-queue its dead deliveries created since a moment",
        tag=tag,
        access=Scope.ADMIN,
        body=p.body_schema(
            {"since": {"type": "string", "format": "date-time"}, "include_pending": {"type": "boolean"}},
            required=["since"],
        ),
        responses={200: ("How many deliveries were re-queued.", obj({"recovered": {"type": "integer"}}))},
    )
    async def recover(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, ["since", "include_pending"])
        since = p.moment(body, "since", required=True)
        assert since is not None
        count = await call.services.subscriptions.recover(
            call.path(ID), since=since, include_pending=bool(p.flag(body, "include_pending"))
        )
        return Answer(200, {"recovered": count})

    @api.operation(
        "POST",
        "/v1/subscriptions/{subscription_id}/replay",
        operation_id="replaySubscription",
        summary="Deliver the stored events since a moment again (a backfill)",
        tag=tag,
        access=Scope.ADMIN,
        body=p.body_schema(
            {"since": {"type": "string", "format": "date-time"}, "patterns": p.STRINGS}, required=["since"]
        ),
        responses={
            200: (
                "The last event seq the replay covers (0: nothing to replay).",
                obj({"upto_seq": {"type": "integer"}}),
            )
        },
    )
    async def replay(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, ["since", "patterns"])
        since = p.moment(body, "since", required=True)
        assert since is not None
        upto = await call.services.subscriptions.replay(
            call.path(ID), since=since, patterns=p.texts(body, "patterns") or ()
        )
        return Answer(200, {"upto_seq": upto})

    @api.operation(
        "POST",
        "/v1/subscriptions/{subscription_id}/test",
        operation_id="sendTestEvent",
        summary="Send it a sample event now (to this subscription only)",
        tag=tag,
        access=Scope.ADMIN,
        body=p.body_schema(
            {"type": {"type": "string", "pattern": "^eventbus\\.test(\\.[A-Za-z0-9_-]+)*$"}, "data": {}}
        ),
        body_required=False,
        responses={202: ("The delivery of the test event; follow it with getDelivery.", delivery)},
    )
    async def send_test(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, ["type", "data"])
        record = await call.services.subscriptions.send_test(
            call.path(ID), type=p.text(body, "type"), data=body.get("data")
        )
        return Answer(202, delivery_view(record))

    @api.operation(
        "GET",
        "/v1/subscriptions/{subscription_id}/why",
        operation_id="explainDelivery",
        summary="Why an event was, or was not (yet), delivered to it",
        tag=tag,
        access=Scope.ADMIN,
        query=(
            Param("event_id", {"type": "string"}, "the event (evt_...), or source and id"),
            Param("source", {"type": "string"}, "the event's CloudEvents source (with id)"),
            Param("id", {"type": "string"}, "the event's CloudEvents id (with source)"),
        ),
        responses={200: ("The verdict, the reasons, and the delivery with its attempts if there is one.", explanation)},
    )
    async def why(call: Call) -> Answer:
        return Answer(200, explanation_view(await call.services.deliveries.why(call.path(ID), _event_ref(call))))

    @api.operation(
        "GET",
        "/v1/deliveries",
        operation_id="listDeliveries",
        summary="Deliveries, oldest first (or newest first)",
        tag="deliveries",
        access=Scope.ADMIN,
        query=(
            Param("subscription_id", {"type": "string"}, "of this subscription only"),
            Param("event_id", {"type": "string"}, "of this event only (or source and id)"),
            Param("source", {"type": "string"}, "the event's CloudEvents source (with id)"),
            Param("id", {"type": "string"}, "the event's CloudEvents id (with source)"),
            Param("state", {"type": "string", "enum": ["pending", "leased", "succeeded", "dead"]}, "in this state"),
            Param("order", {"type": "string", "enum": ["oldest", "newest"]}, "oldest first (default) or newest first"),
            *p.PAGE_PARAMS,
        ),
        responses={200: ("A page of deliveries.", page_of(delivery))},
    )
    async def list_deliveries(call: Call) -> Answer:
        size, token = p.page(call)
        filtered = any(call.query(name) for name in ("event_id", "source", "id"))
        ref = _event_ref(call) if filtered else None
        found, next_token = await call.services.deliveries.list_page(
            subscription_id=call.query("subscription_id") or "",
            event=ref,
            state=call.query("state") or "",
            page_size=size,
            page_token=token,
            newest_first=_newest_first(call),
        )
        return Answer(200, {"items": [delivery_view(d) for d in found], "next_page_token": next_token})

    @api.operation(
        "GET",
        "/v1/deliveries/{delivery_id}",
        operation_id="getDelivery",
        summary="One delivery with every attempt (status or error class, response excerpt, latency)",
        tag="deliveries",
        access=Scope.ADMIN,
        responses={200: ("The delivery and its attempts.", detailed)},
    )
    async def get_delivery(call: Call) -> Answer:
        record, attempts = await call.services.deliveries.get(call.path("delivery_id"))
        return Answer(200, delivery_view(record, attempts))

    @api.operation(
        "POST",
        "/v1/deliveries/{delivery_id}/resend",
        operation_id="resendDelivery",
        summary="A new attempt now, outside the retry schedule",
        tag="deliveries",
        access=Scope.ADMIN,
        responses={202: ("Queued for an attempt now.", delivery)},
        body=p.body_schema({}),
        body_required=False,
    )
    async def resend(call: Call) -> Answer:
        p.refuse_unknown(await call.body(), [])  # none expected: an empty object at most
        return Answer(202, delivery_view(await call.services.deliveries.resend(call.path("delivery_id"))))


def _add_state_action(api: Api, action: str, summary: str, one: Mapping[int, tuple[str, JSON | None]]) -> None:
    @api.operation(
        "POST",
        f"/v1/subscriptions/{{subscription_id}}/{action}",
        operation_id=f"{action}Subscription",
        summary=summary,
        tag="subscriptions",
        access=Scope.ADMIN,
        responses=one,
        body=p.body_schema({}),
        body_required=False,
    )
    async def change(call: Call) -> Answer:
        p.refuse_unknown(await call.body(), [])
        subscriptions = call.services.subscriptions
        info = await (subscriptions.pause if action == "pause" else subscriptions.resume)(call.path(ID))
        return Answer(200, subscription_view(info))

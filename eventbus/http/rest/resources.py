"""REST: sources, consumer groups, events (list, get with the raw inbound request, publish) and API keys."""

from __future__ import annotations

from eventbus import tracing
from eventbus.auth import Scope
from eventbus.bus.sources import SourceInput
from eventbus.cejson import event_from_json
from eventbus.errors import FieldViolation, InvalidArgumentError, PayloadTooLargeError
from eventbus.http.rest import params as p
from eventbus.http.rest.api import JSON, Answer, Api, Call, Param
from eventbus.http.rest.views import (
    EVENT,
    EVENT_DETAIL,
    GROUP,
    KEY,
    NEW_KEY,
    PUBLISHED,
    SOURCE,
    event_view,
    group_view,
    key_view,
    page_of,
    published_view,
    raw_request_view,
    source_view,
)
from eventbus.logs import bind_event_ids
from eventbus.model import Event
from eventbus.store.base import StartPosition

MAX_PUBLISH = 1000
SOURCE_SETTINGS: JSON = {
    "secrets": {**p.STRINGS, "maxItems": 2, "description": "replaces every secret (use rotate-secret for a grace)"},
    "options": {"type": "object"},
    "enabled": {"type": "boolean"},
    "rate_limit": {"type": "number", "minimum": 0, "description": "requests per second (0: none)"},
}
SOURCE_CREATE = p.body_schema(
    {"name": {"type": "string"}, "connector": {"type": "string"}, **SOURCE_SETTINGS}, required=["name", "connector"]
)
SOURCE_UPDATE = p.body_schema(SOURCE_SETTINGS)


def _source_input(body: JSON, **names: str) -> SourceInput:
    return SourceInput(
        secrets=p.texts(body, "secrets"),
        options=p.mapping(body, "options"),
        enabled=p.flag(body, "enabled"),
        rate_limit=p.number(body, "rate_limit"),
        **names,
    )


def add(api: Api) -> None:
    source = api.component("Source", SOURCE)
    group = api.component("Group", GROUP)
    event = api.component("Event", EVENT)
    key = api.component("ApiKey", KEY)
    one_source = {200: ("The source.", source)}

    @api.operation(
        "GET",
        "/v1/sources",
        operation_id="listSources",
        summary="Inbound sources (receivers of /hooks/{name})",
        tag="sources",
        access=Scope.ADMIN,
        query=p.PAGE_PARAMS,
        responses={200: ("A page of sources.", page_of(source))},
    )
    async def list_sources(call: Call) -> Answer:
        size, token = p.page(call)
        found, next_token = await call.services.sources.list_page(page_size=size, page_token=token)
        now = call.services.bus.clock.now()
        return Answer(200, {"items": [source_view(s, now) for s in found], "next_page_token": next_token})

    @api.operation(
        "POST",
        "/v1/sources",
        operation_id="createSource",
        reveals=("revealed_secrets",),
        summary="Create a source",
        tag="sources",
        access=Scope.ADMIN,
        body=SOURCE_CREATE,
        idempotent=True,
        responses={201: ("Created; `revealed_secrets` holds a generated secret, shown this once.", source)},
    )
    async def create_source(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, list(SOURCE_CREATE["properties"]))
        spec = _source_input(
            body,
            name=p.text(body, "name", required=True) or "",
            connector=p.text(body, "connector", required=True) or "",
        )
        info = await call.services.sources.create(spec)
        return Answer(201, source_view(info, call.services.bus.clock.now()))

    @api.operation(
        "GET",
        "/v1/sources/{source}",
        operation_id="getSource",
        summary="One source, by name or id",
        tag="sources",
        access=Scope.ADMIN,
        responses=one_source,
    )
    async def get_source(call: Call) -> Answer:
        info = await call.services.sources.get(call.path("source"))
        return Answer(200, source_view(info, call.services.bus.clock.now()))

    @api.operation(
        "PATCH",
        "/v1/sources/{source}",
        operation_id="updateSource",
        summary="Change the settings given",
        tag="sources",
        access=Scope.ADMIN,
        body=SOURCE_UPDATE,
        responses=one_source,
    )
    async def update_source(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, list(SOURCE_UPDATE["properties"]))
        info = await call.services.sources.update(call.path("source"), _source_input(body))
        return Answer(200, source_view(info, call.services.bus.clock.now()))

    @api.operation(
        "DELETE",
        "/v1/sources/{source}",
        operation_id="deleteSource",
        summary="Delete it (/hooks/{name} then 404s)",
        tag="sources",
        access=Scope.ADMIN,
        responses={204: ("Deleted.", None)},
    )
    async def delete_source(call: Call) -> Answer:
        await call.services.sources.delete(call.path("source"))
        return Answer(204)

    @api.operation(
        "POST",
        "/v1/sources/{source}/rotate-secret",
        operation_id="rotateSourceSecret",
        reveals=("revealed_secrets",),
        summary="A new secret; the previous one keeps verifying 24 h",
        tag="sources",
        access=Scope.ADMIN,
        body=p.body_schema({"secret": {"type": "string"}}),
        body_required=False,
        responses={200: ("Rotated; `revealed_secrets` holds the new secret, shown this once.", source)},
    )
    async def rotate_source(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, ["secret"])
        try:
            info = await call.services.sources.rotate_secret(call.path("source"), p.text(body, "secret"))
        except InvalidArgumentError as exc:
            raise p.renamed(exc, "secrets", "secret") from exc
        return Answer(200, source_view(info, call.services.bus.clock.now()))

    @api.operation(
        "GET",
        "/v1/groups",
        operation_id="listGroups",
        summary="gRPC consumer groups",
        tag="groups",
        access=Scope.ADMIN,
        query=p.PAGE_PARAMS,
        responses={200: ("A page of groups.", page_of(group))},
    )
    async def list_groups(call: Call) -> Answer:
        size, token = p.page(call)
        found, next_token = await call.services.groups.list(page_size=size, page_token=token)
        return Answer(200, {"items": [group_view(g) for g in found], "next_page_token": next_token})

    @api.operation(
        "GET",
        "/v1/groups/{group}",
        operation_id="getGroup",
        summary="One consumer group with its backlog",
        tag="groups",
        access=Scope.ADMIN,
        responses={200: ("The group.", group)},
    )
    async def get_group(call: Call) -> Answer:
        return Answer(200, group_view(await call.services.groups.get(call.path("group"))))

    @api.operation(
        "POST",
        "/v1/groups/{group}/seek",
        operation_id="seekGroup",
        summary="Move the group's position: to a seq, a time, or the earliest or latest event",
        tag="groups",
        access=Scope.ADMIN,
        body=p.body_schema(
            {
                "to": {"type": "string", "enum": ["earliest", "latest", "seq", "time"]},
                "seq": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                "time": {"type": "string", "format": "date-time"},
            },
            required=["to"],
        ),
        responses={200: ("The group, from its new position.", group)},
    )
    async def seek_group(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, ["to", "seq", "time"])
        to = p.text(body, "to", required=True)
        if to not in ("earliest", "latest", "seq", "time"):
            raise InvalidArgumentError.for_field("to", "earliest, latest, seq or time")
        start = StartPosition(edge=to, seq=p.integer(body, "seq"), time=p.moment(body, "time", required=to == "time"))
        if to == "seq" and start.seq is None:
            raise InvalidArgumentError.for_field("seq", "is required with to=seq")
        return Answer(200, group_view(await call.services.groups.seek(call.path("group"), start)))

    @api.operation(
        "DELETE",
        "/v1/groups/{group}",
        operation_id="deleteGroup",
        summary="Delete a consumer group",
        tag="groups",
        access=Scope.ADMIN,
        responses={204: ("Deleted.", None)},
    )
    async def delete_group(call: Call) -> Answer:
        await call.services.groups.delete(call.path("group"))
        return Answer(204)

    @api.operation(
        "GET",
        "/v1/events",
        operation_id="listEvents",
        summary="Stored events in seq order; a page may be short when few match: page on until the token is empty",
        tag="events",
        access=Scope.ADMIN,
        query=(
            Param("pattern", {"type": "string"}, "a type pattern (repeatable)"),
            Param("source", {"type": "string"}, "this CloudEvents source only"),
            Param("subject", {"type": "string"}, "this subject only"),
            Param("received_after", {"type": "string", "format": "date-time"}, "received at or after"),
            Param("received_before", {"type": "string", "format": "date-time"}, "received before"),
            *p.PAGE_PARAMS,
        ),
        responses={200: ("A page of events.", page_of(event))},
    )
    async def list_events(call: Call) -> Answer:
        size, token = p.page(call)
        try:
            found, next_token = await call.services.bus.list_events(
                page_size=size,
                page_token=token,
                patterns=call.query_all("pattern"),
                source=call.query("source") or None,
                subject=call.query("subject") or None,
                received_after=p.query_time(call, "received_after"),
                received_before=p.query_time(call, "received_before"),
            )
        except InvalidArgumentError as exc:
            raise p.renamed(exc, "patterns", "pattern") from exc
        return Answer(200, {"items": [event_view(e) for e in found], "next_page_token": next_token})

    @api.operation(
        "POST",
        "/v1/events",
        operation_id="publishEvents",
        summary="Publish CloudEvents JSON objects, atomically (all stored or none)",
        tag="events",
        access=Scope.PUBLISH,
        idempotent=True,
        body=p.body_schema(
            {"events": {"type": "array", "minItems": 1, "maxItems": MAX_PUBLISH, "items": {"type": "object"}}},
            required=["events"],
        ),
        responses={
            201: ("Stored (durably) before this answer.", PUBLISHED),
            200: ("Every event was a duplicate of one already stored.", PUBLISHED),
        },
    )
    async def publish(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, ["events"])
        items = body.get("events")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_PUBLISH:
            raise InvalidArgumentError.for_field("events", f"an array of 1 to {MAX_PUBLISH} CloudEvents JSON objects")
        events: list[Event] = []
        problems: list[FieldViolation] = []
        too_large = True
        for index, item in enumerate(items):
            try:
                events.append(event_from_json(item, field_prefix=f"events[{index}]"))
            except InvalidArgumentError as exc:
                problems.extend(exc.violations)
                too_large = too_large and isinstance(exc, PayloadTooLargeError)
        if problems:
            raise (PayloadTooLargeError if too_large else InvalidArgumentError).from_violations(problems)
        results = await tracing.publish(events, call.services.bus.publish)
        bind_event_ids(r.event_id for r in results)
        return Answer(200 if all(r.duplicate for r in results) else 201, published_view(results))

    @api.operation(
        "GET",
        "/v1/events/{event_id}",
        operation_id="getEvent",
        summary="One event, with the raw inbound request it came from (for /hooks events; secrets redacted)",
        tag="events",
        access=Scope.ADMIN,
        responses={200: ("The event.", api.component("EventDetail", EVENT_DETAIL))},
    )
    async def get_event(call: Call) -> Answer:
        detail = await call.services.bus.get_event_detail(event_id=call.path("event_id"))
        raw = raw_request_view(detail.raw_request) if detail.raw_request is not None else None
        return Answer(200, {"event": event_view(detail.event), "raw_request": raw})

    @api.operation(
        "GET",
        "/v1/keys",
        operation_id="listKeys",
        summary="API keys (never the key itself)",
        tag="keys",
        access=Scope.ADMIN,
        query=(Param("include_revoked", {"type": "boolean"}, "revoked keys too"), *p.PAGE_PARAMS),
        responses={200: ("A page of keys.", page_of(key))},
    )
    async def list_keys(call: Call) -> Answer:
        size, token = p.page(call)
        found, next_token = await call.services.api_keys.list(
            include_revoked=p.query_bool(call, "include_revoked"), page_size=size, page_token=token
        )
        return Answer(200, {"items": [key_view(k) for k in found], "next_page_token": next_token})

    @api.operation(
        "POST",
        "/v1/keys",
        operation_id="createKey",
        reveals=("key",),
        summary="Create an API key; the key is shown this once",
        tag="keys",
        access=Scope.ADMIN,
        idempotent=True,
        body=p.body_schema(
            {
                "scopes": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "enum": ["publish", "subscribe", "admin"]},
                },
                "name": {"type": "string", "maxLength": 200},
            },
            required=["scopes"],
        ),
        responses={201: ("Created; `key` is shown this once.", api.component("NewApiKey", NEW_KEY))},
    )
    async def create_key(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, ["scopes", "name"])
        created = await call.services.api_keys.create(p.texts(body, "scopes") or [], name=p.text(body, "name") or "")
        return Answer(201, {**key_view(created.info), "key": created.key})

    @api.operation(
        "DELETE",
        "/v1/keys/{key_id}",
        operation_id="revokeKey",
        summary="Revoke a key (it never comes back)",
        tag="keys",
        access=Scope.ADMIN,
        responses={200: ("The revoked key.", key)},
    )
    async def revoke_key(call: Call) -> Answer:
        return Answer(200, key_view(await call.services.api_keys.revoke(call.path("key_id"))))

"""REST: the catalogue of event types seen (counts, last seen, a sample) and their registered JSON Schemas."""

from __future__ import annotations

import json

from eventbus.auth import Scope
from eventbus.errors import InvalidArgumentError
from eventbus.http.rest import params as p
from eventbus.http.rest.api import JSON, Answer, Api, Call, Param
from eventbus.http.rest.views import INTEGER, MAYBE_STRING, MAYBE_TIME, STRING, obj, page_of, time_or_none
from eventbus.store.types import EventTypeRecord

EVENT_TYPE = obj(
    {
        "type": STRING,
        "count": INTEGER,
        "first_seen": MAYBE_TIME,
        "last_seen": MAYBE_TIME,
        "sample_event_id": MAYBE_STRING,
        "sample": {"description": "the last event's data (JSON), or null"},
        "sample_omitted": {
            "type": ["string", "null"],
            "description": "why there is no sample: too_large or not_json",
        },
        "schema": {"type": ["object", "boolean", "null"], "description": "the registered JSON Schema, or null"},
        "schema_updated_at": MAYBE_TIME,
    }
)


def event_type_view(record: EventTypeRecord) -> JSON:
    return {
        "type": record.type,
        "count": record.count,
        "first_seen": time_or_none(record.first_seen),
        "last_seen": time_or_none(record.last_seen),
        "sample_event_id": record.sample_event_id,
        "sample": json.loads(record.sample) if record.sample is not None else None,
        "sample_omitted": record.sample_omitted,
        "schema": json.loads(record.schema) if record.schema is not None else None,
        "schema_updated_at": time_or_none(record.schema_updated_at),
    }


def add(api: Api) -> None:
    event_type = api.component("EventType", EVENT_TYPE)
    one = {200: ("The event type.", event_type)}

    @api.operation(
        "GET",
        "/v1/event-types",
        operation_id="listEventTypes",
        summary="Event types seen (and those with a schema), in name order",
        tag="event-types",
        access=Scope.ADMIN,
        query=(Param("pattern", {"type": "string"}, "a type pattern (`eventbus.**` for system types)"), *p.PAGE_PARAMS),
        responses={200: ("A page of event types.", page_of(event_type))},
    )
    async def list_types(call: Call) -> Answer:
        size, token = p.page(call)
        try:
            found, next_token = await call.services.types.list_page(
                page_size=size, page_token=token, pattern=call.query("pattern") or None
            )
        except InvalidArgumentError as exc:
            raise p.renamed(exc, "pattern", "pattern") from exc
        return Answer(200, {"items": [event_type_view(r) for r in found], "next_page_token": next_token})

    @api.operation(
        "GET",
        "/v1/event-types/{type}",
        operation_id="getEventType",
        summary="One event type: count, first and last seen, a sample payload, its schema",
        tag="event-types",
        access=Scope.ADMIN,
        responses=one,
    )
    async def get_type(call: Call) -> Answer:
        return Answer(200, event_type_view(await call.services.types.get(call.path("type"))))

    @api.operation(
        "PUT",
        "/v1/event-types/{type}/schema",
        operation_id="setEventSchema",
        summary="Register (or replace) the JSON Schema (draft 2020-12) events of this type must validate against",
        tag="event-types",
        access=Scope.ADMIN,
        body=p.body_schema({"schema": {"type": ["object", "boolean"]}}, required=["schema"]),
        responses=one,
    )
    async def set_schema(call: Call) -> Answer:
        body = await call.body()
        p.refuse_unknown(body, ["schema"])
        if not isinstance(body.get("schema"), dict | bool):
            raise InvalidArgumentError.for_field("schema", "is required: a JSON Schema object (or true / false)")
        record = await call.services.types.set_schema(call.path("type"), body["schema"])
        return Answer(200, event_type_view(record))

    @api.operation(
        "DELETE",
        "/v1/event-types/{type}/schema",
        operation_id="deleteEventSchema",
        summary="Stop validating events of this type",
        tag="event-types",
        access=Scope.ADMIN,
        responses={204: ("Removed.", None)},
    )
    async def delete_schema(call: Call) -> Answer:
        await call.services.types.delete_schema(call.path("type"))
        return Answer(204)

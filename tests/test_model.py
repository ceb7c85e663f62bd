"""The event model: CloudEvents 1.0 rules, CloudEvents JSON and protobuf conversions, ids, retry policy."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from eventbus.bus.retry import next_retry_at
from eventbus.cejson import event_from_json, event_to_json, events_from_json_lines
from eventbus.errors import InvalidArgumentError, PayloadTooLargeError
from eventbus.grpc.convert import event_from_proto, event_to_proto
from eventbus.ids import is_id, new_id, ulid
from eventbus.model import MAX_EVENT_BYTES, DataKind, Event, filter_document, parse_rfc3339, validate_event
from eventbus.store.base import DEFAULT_RETRY_SCHEDULE
from eventbus.v1 import cloudevent_pb2

WHEN = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def full_event() -> Event:
    return Event.create(
        type="order.paid",
        source="https://shop.example/orders",
        id="o-1",
        subject="cust-9",
        time=WHEN,
        dataschema="https://schemas.example/order.json",
        extensions={"traceparent": "00-abc-def-01", "priority": 3, "urgent": True, "blob": b"\x00\xff", "due": WHEN},
        data={"amount": 12500, "currency": "BRL", "items": [{"sku": "A"}]},
    )


def violations(exc: pytest.ExceptionInfo[InvalidArgumentError]) -> dict[str, str]:
    return {v.field: v.detail for v in exc.value.violations}


def test_create_picks_the_data_kind() -> None:
    assert Event.create(type="a.b", source="/s", data=b"\x01").data_kind is DataKind.BINARY
    assert Event.create(type="a.b", source="/s", data="hi").data_kind is DataKind.TEXT
    json_event = Event.create(type="a.b", source="/s", data={"k": [1, 2]})
    assert json_event.data_kind is DataKind.JSON
    assert json_event.datacontenttype == "application/json"
    assert json_event.json_data() == {"k": [1, 2]}
    assert Event.create(type="a.b", source="/s").id  # a generated id


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": ""}, "id"),
        ({"source": ""}, "source"),
        ({"source": "has space"}, "source"),
        ({"source": "1bad:scheme"}, "source"),
        ({"source": "/bad%zz"}, "source"),
        ({"type": ""}, "type"),
        ({"type": "order..paid"}, "type"),
        ({"type": "order/paid"}, "type"),
        ({"specversion": "0.3"}, "specversion"),
        ({"subject": ""}, "subject"),
        ({"subject": "a\x00b"}, "subject"),
        ({"datacontenttype": "json"}, "datacontenttype"),
        ({"dataschema": "relative/path"}, "dataschema"),
        ({"time": datetime(2026, 1, 1)}, "time"),
        ({"extensions": {"Bad-Name": "x"}}, "extensions.Bad-Name"),
        ({"extensions": {"subject": "x"}}, "extensions.subject"),
        ({"extensions": {"big": 2**40}}, "extensions.big"),
        ({"extensions": {"f": 1.5}}, "extensions.f"),
    ],
)
def test_cloudevents_rules_name_the_field(changes: dict[str, object], field: str) -> None:
    base = {"id": "1", "source": "/s", "type": "a.b"}
    base.update(changes)
    with pytest.raises(InvalidArgumentError) as exc:
        validate_event(Event(**base))  # type: ignore[arg-type]
    assert field in violations(exc)
    assert exc.value.message.startswith(field)


def test_every_violation_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        validate_event(Event(id="", source="", type=""))
    assert set(violations(exc)) == {"id", "source", "type"}


def test_size_limit_is_one_mebibyte() -> None:
    Event.create(type="a.b", source="/s", data=b"x" * (MAX_EVENT_BYTES - 200))
    with pytest.raises(PayloadTooLargeError) as exc:
        Event.create(type="a.b", source="/s", data=b"x" * MAX_EVENT_BYTES)
    assert "data" in violations(exc)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "2026-05-01T12:00:00Z",
        "2026-05-01t12:00:00z",
        "2026-05-01T12:00:00.123456789+03:00",
        "2026-05-01T12:00:00-00:30",
    ],
)
def test_rfc3339_accepted(text: str) -> None:
    assert parse_rfc3339(text).tzinfo is not None


@pytest.mark.parametrize("text", ["2026-05-01", "2026-05-01T12:00:00", "2026-13-01T12:00:00Z", "yesterday", ""])
def test_rfc3339_refused(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_rfc3339(text)


def test_cloudevents_json_round_trip() -> None:
    event = full_event()
    obj = event_to_json(event)
    assert obj["data"] == {"amount": 12500, "currency": "BRL", "items": [{"sku": "A"}]}
    assert obj["time"] == "2026-05-01T12:00:00.123456Z"
    assert obj["blob"] == "AP8="
    back = event_from_json(obj)
    assert back.type == event.type and back.subject == event.subject and back.time == event.time
    assert back.json_data() == event.json_data()
    assert back.extensions["priority"] == 3 and back.extensions["urgent"] is True


def test_cloudevents_json_binary_and_text_data() -> None:
    binary = event_from_json({"specversion": "1.0", "id": "1", "source": "/s", "type": "a.b", "data_base64": "AAEC"})
    assert binary.data == b"\x00\x01\x02"
    assert event_to_json(binary)["data_base64"] == "AAEC"
    text = event_from_json(
        {"specversion": "1.0", "id": "1", "source": "/s", "type": "a.b", "datacontenttype": "text/plain", "data": "hi"}
    )
    assert (text.data, text.data_kind) == (b"hi", DataKind.TEXT)
    assert event_to_json(text)["data"] == "hi"


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"id": "1", "source": "/s", "type": "a.b"}, "specversion"),
        ({"specversion": "1.0", "id": 5, "source": "/s", "type": "a.b"}, "id"),
        ({"specversion": "1.0", "id": "1", "source": "/s", "type": "a.b", "time": "noon"}, "time"),
        ({"specversion": "1.0", "id": "1", "source": "/s", "type": "a.b", "data_base64": "!!"}, "data_base64"),
        ({"specversion": "1.0", "id": "1", "source": "/s", "type": "a.b", "data": 1, "data_base64": "AA=="}, "data"),
        ({"specversion": "1.0", "id": "1", "source": "/s", "type": "a.b", "x": {"nested": 1}}, "extensions.x"),
    ],
)
def test_cloudevents_json_errors(obj: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        event_from_json(obj, field_prefix="events[2]")
    assert f"events[2].{field}" in violations(exc)


def test_json_lines_name_the_line() -> None:
    good = '{"specversion": "1.0", "id": "1", "source": "/s", "type": "a.b"}'
    assert len(events_from_json_lines(f"{good}\n\n{good}\n")) == 2
    with pytest.raises(InvalidArgumentError) as exc:
        events_from_json_lines(f"{good}\n{{oops\n")
    assert "line 2" in exc.value.message


def test_protobuf_round_trip_keeps_everything() -> None:
    event = full_event()
    message = event_to_proto(event)
    assert message.attributes["time"].WhichOneof("attr") == "ce_timestamp"
    back = event_from_proto(cloudevent_pb2.CloudEvent.FromString(message.SerializeToString()))
    assert back == event
    binary = Event.create(type="a.b", source="/s", data=bytes(range(256)))
    assert event_from_proto(event_to_proto(binary)).data == bytes(range(256))


def test_protobuf_errors_use_protobuf_field_names() -> None:
    message = cloudevent_pb2.CloudEvent(id="1", source="/s", type="a.b", spec_version="1.0")
    message.attributes["time"].ce_string = "not a time"
    message.attributes["Bad"].ce_string = "x"
    with pytest.raises(InvalidArgumentError) as exc:
        event_from_proto(message, "events[0]")
    assert "events[0].attributes.time" in violations(exc)
    message = cloudevent_pb2.CloudEvent(id="1", source="/s", type="a.b")
    with pytest.raises(InvalidArgumentError) as exc:
        event_from_proto(message, "events[0]")
    assert "events[0].spec_version" in violations(exc)
    message = cloudevent_pb2.CloudEvent(id="1", source="/s", type="a.b", spec_version="1.0", text_data="{bad")
    message.attributes["datacontenttype"].ce_string = "application/json"
    with pytest.raises(InvalidArgumentError):
        event_from_proto(message)


def test_filter_document_has_json_data_only_when_json() -> None:
    document = filter_document(full_event())
    assert document["data"] == {"amount": 12500, "currency": "BRL", "items": [{"sku": "A"}]}
    assert document["ext"] == {
        "traceparent": "00-abc-def-01",
        "priority": 3,
        "urgent": True,
        "blob": b"\x00\xff",
        "due": "2026-05-01T12:00:00.123456Z",
    }
    assert "data" not in filter_document(Event.create(type="a.b", source="/s", data=b"{}"))
    labelled = Event.create(type="a.b", source="/s", data=b'{"k": 1}', datacontenttype="application/json")
    assert filter_document(labelled)["data"] == {"k": 1}  # raw JSON bytes (HTTP binary mode) are filterable


def test_ids_are_prefixed_sortable_ulids() -> None:
    ids = [new_id("evt") for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 2000
    assert all(is_id(i, "evt") for i in ids)
    assert not is_id("evt_short", "evt")
    assert not is_id(ids[0], "sub")
    assert ulid(0) < ulid(1)


def test_retry_schedule_with_jitter() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rng = random.Random(7)
    for attempt, delay in enumerate(DEFAULT_RETRY_SCHEDULE, start=1):
        for _ in range(50):
            due = next_retry_at(schedule=DEFAULT_RETRY_SCHEDULE, attempt=attempt, now=now, rng=rng)
            assert due is not None
            assert delay * 0.8 <= due - now <= delay * 1.2
    assert next_retry_at(schedule=DEFAULT_RETRY_SCHEDULE, attempt=8, now=now) is None


def test_retry_after_and_slow_failures() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    schedule = DEFAULT_RETRY_SCHEDULE
    slow = next_retry_at(schedule=schedule, attempt=1, now=now, slow_failure=True)
    assert slow is not None and timedelta(seconds=48) <= slow - now <= timedelta(seconds=72)
    for _ in range(50):
        due = next_retry_at(schedule=schedule, attempt=1, now=now, retry_after=timedelta(seconds=8))
        assert due is not None and timedelta(seconds=8) <= due - now <= timedelta(seconds=12)
    huge = next_retry_at(schedule=schedule, attempt=1, now=now, retry_after=timedelta(hours=1))
    assert huge is not None and huge - now >= timedelta(hours=1)  # never below Retry-After

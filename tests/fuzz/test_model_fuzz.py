"""The event model: valid events survive every encoding the bus speaks (CloudEvents JSON, protobuf), and anything
at all handed to the decoders is either an event or an `InvalidArgumentError` naming fields, never another error."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from eventbus.cejson import event_from_json, event_to_json
from eventbus.errors import InvalidArgumentError
from eventbus.grpc.convert import event_from_proto, event_to_proto
from eventbus.model import Event, validate_event
from eventbus.v1 import cloudevent_pb2
from tests.fuzz.profiles import fuzz, outcome

# Strings CloudEvents allows in attributes: no control characters, no lone surrogates.
attribute_text = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=24)
uri_reference = st.text(alphabet="abcxyz019-._~/?#[]@!$&'()*+,;=:%", min_size=1, max_size=24).filter(
    lambda text: "%" not in text and ":" not in text.split("/")[0]
) | st.sampled_from(["/hooks/shop", "https://example.com/a?b=c", "urn:uuid:1", "mailto:a@b.c"])
event_type = st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,6}", fullmatch=True), min_size=1, max_size=4).map(".".join)
moment = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC), allow_imaginary=False
)
extension_name = st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True).filter(
    lambda name: name not in {"id", "source", "specversion", "type", "subject", "time", "data", "dataschema"}
)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=10))
json_data = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)
payloads = st.one_of(
    st.none(),
    json_data.filter(lambda value: value is not None),
    st.binary(min_size=1, max_size=64),
    st.text(min_size=1, max_size=32),
)


@st.composite
def valid_events(draw: st.DrawFn) -> Event:
    data = draw(payloads)
    content_type = None
    if isinstance(data, bytes):
        content_type = draw(st.sampled_from([None, "application/octet-stream", "image/png"]))
    elif isinstance(data, str):
        content_type = draw(st.sampled_from(["text/plain", "text/csv; charset=utf-8"]))
    return Event.create(
        id=draw(attribute_text),
        source=draw(uri_reference),
        type=draw(event_type),
        subject=draw(st.none() | attribute_text),
        time=draw(st.none() | moment),
        datacontenttype=content_type,
        dataschema=draw(st.sampled_from([None, "https://example.com/schema.json", "urn:schema:1"])),
        extensions=draw(
            st.dictionaries(
                extension_name, st.one_of(st.booleans(), st.integers(-(2**31), 2**31 - 1), attribute_text), max_size=3
            )
        ),
        data=data,
    )


@fuzz(250)
@given(event=valid_events())
def test_cloudevents_json_round_trip(event: Event) -> None:
    encoded = json.dumps(event_to_json(event))
    assert event_from_json(json.loads(encoded)) == event


@fuzz(250)
@given(event=valid_events())
def test_protobuf_round_trip(event: Event) -> None:
    wire = event_to_proto(event).SerializeToString()
    assert event_from_proto(cloudevent_pb2.CloudEvent.FromString(wire)) == event


anything = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=6)),
    max_leaves=16,
)
# Objects that look like CloudEvents (the right keys, values of any type), so validation gets past the first check.
near_events = st.fixed_dictionaries(
    {},
    optional={
        "specversion": st.sampled_from(["1.0", "0.3", "", 1]) | anything,
        "id": attribute_text | anything,
        "source": uri_reference | anything,
        "type": event_type | anything,
        "subject": anything,
        "time": st.sampled_from(["2026-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "yesterday"]) | anything,
        "datacontenttype": st.sampled_from(["application/json", "text/plain", "nonsense"]) | anything,
        "dataschema": anything,
        "data": anything,
        "data_base64": st.sampled_from(["AAEC", "!!", ""]) | anything,
        "x": anything,
        "Bad-Name": anything,
    },
)


@fuzz(300)
@given(document=st.one_of(near_events, anything))
def test_any_json_value_is_an_event_or_invalid_argument(document: Any) -> None:
    result = outcome(lambda: event_from_json(document, field_prefix="events[0]"))
    if isinstance(result, InvalidArgumentError):
        assert result.violations, result
        assert all(v.field.startswith("events[0]") for v in result.violations), result.violations
    else:
        validate_event(result)  # what was accepted is valid by the model's own rules


@fuzz(300)
@given(wire=st.binary(max_size=200))
def test_any_protobuf_bytes_are_an_event_or_invalid_argument(wire: bytes) -> None:
    try:
        message = cloudevent_pb2.CloudEvent.FromString(wire)
    except DecodeError:
        return  # not protobuf at all: the gRPC layer answers INVALID_ARGUMENT (tests/fuzz/test_grpc_fuzz.py)
    result = outcome(lambda: event_from_proto(message))
    assert not isinstance(result, InvalidArgumentError) or result.violations, result

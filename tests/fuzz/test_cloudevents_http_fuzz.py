"""`POST /events` (CloudEvents HTTP binding): valid events round-trip through binary, structured and batched
modes; arbitrary bodies and `ce-*` headers give an `InvalidArgumentError` from the parser functions and a 4xx
problem from a real server, never a 5xx."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from eventbus.cejson import event_to_json
from eventbus.errors import InvalidArgumentError
from eventbus.http.events import batch_events, binary_event, parse_json_body
from eventbus.model import DataKind, Event, format_rfc3339
from tests.fuzz.profiles import fuzz, outcome
from tests.fuzz.test_model_fuzz import valid_events

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def binary_request(event: Event) -> tuple[CIMultiDict[str], bytes]:
    """The event in binary mode: every attribute a percent-encoded `ce-*` header, the data as the body."""
    headers: CIMultiDict[str] = CIMultiDict()
    attributes: dict[str, str | None] = {
        "specversion": event.specversion,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "time": format_rfc3339(event.time) if event.time else None,
        "dataschema": event.dataschema,
    }
    attributes.update({name: str(value) for name, value in event.extensions.items()})
    for name, value in attributes.items():
        if value is not None:
            headers[f"ce-{name}"] = quote(value, safe="")
    if event.datacontenttype is not None:
        headers["Content-Type"] = event.datacontenttype
    return headers, event.data or b""


def binary_events() -> st.SearchStrategy[Event]:
    """Events binary mode can carry exactly: extensions as strings (the header has no types), data as bytes."""
    return (
        valid_events()
        .filter(lambda e: e.data_kind is not DataKind.TEXT)
        .map(
            lambda e: Event.create(
                id=e.id,
                source=e.source,
                type=e.type,
                subject=e.subject,
                time=e.time,
                datacontenttype=e.datacontenttype,
                dataschema=e.dataschema,
                extensions={name: str(value) for name, value in e.extensions.items()},
                data=e.data,
            )
        )
    )


@fuzz(200)
@given(event=binary_events())
def test_binary_mode_round_trip(event: Event) -> None:
    headers, body = binary_request(event)
    parsed = binary_event(headers, headers.get("Content-Type"), body)
    assert (parsed.id, parsed.source, parsed.type, parsed.subject, parsed.time) == (
        event.id,
        event.source,
        event.type,
        event.subject,
        event.time,
    )
    assert (parsed.datacontenttype, parsed.dataschema, dict(parsed.extensions)) == (
        event.datacontenttype,
        event.dataschema,
        dict(event.extensions),
    )
    assert parsed.data == event.data  # byte-exact


@fuzz(150)
@given(events=st.lists(valid_events(), min_size=1, max_size=4))
def test_structured_and_batched_round_trip(events: list[Event]) -> None:
    one = parse_json_body(json.dumps(event_to_json(events[0])).encode())
    assert batch_events([one]) == [events[0]]
    batch = parse_json_body(json.dumps([event_to_json(event) for event in events]).encode())
    assert batch_events(batch) == events


header_names = st.one_of(
    st.sampled_from(["ce-id", "ce-source", "ce-type", "ce-specversion", "ce-time", "ce-subject", "ce-datacontenttype"]),
    st.from_regex(r"ce-[A-Za-z0-9_-]{0,12}", fullmatch=True),
)
header_values = st.one_of(
    st.sampled_from(["1.0", "order.paid", "/shop", "2026-01-01T00:00:00Z", "%", "%zz", "%C3", '"quoted\\"x"', ""]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
)


@fuzz(400)
@given(
    headers=st.lists(st.tuples(header_names, header_values), max_size=8),
    content_type=st.one_of(st.none(), st.sampled_from(["application/json", "text/plain", "x", "application/json; a"])),
    body=st.binary(max_size=64),
)
def test_binary_mode_parser_refuses_with_invalid_argument_only(
    headers: list[tuple[str, str]], content_type: str | None, body: bytes
) -> None:
    result = outcome(lambda: binary_event(CIMultiDict(headers), content_type, body))
    assert not isinstance(result, InvalidArgumentError) or result.violations


@fuzz(400)
@given(body=st.one_of(st.binary(max_size=80), st.text(max_size=80).map(str.encode)))
def test_json_modes_parser_refuses_with_invalid_argument_only(body: bytes) -> None:
    for wrap in (lambda doc: batch_events(doc), lambda doc: batch_events([doc])):
        result = outcome(lambda: wrap(parse_json_body(body)))  # noqa: B023 - called at once, inside the loop
        assert not isinstance(result, InvalidArgumentError) or result.violations


# -- through a real server --------------------------------------------------------------------------------------

content_types = st.one_of(
    st.sampled_from([STRUCTURED, BATCH, "application/json", "text/plain", STRUCTURED + "; charset=latin-1", ""]),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30),
)
bodies = st.one_of(
    st.binary(max_size=200),
    valid_events().map(lambda e: json.dumps(event_to_json(e)).encode()),
    st.lists(valid_events(), min_size=1, max_size=3).map(
        lambda es: json.dumps([event_to_json(e) for e in es]).encode()
    ),
    st.recursive(
        st.one_of(st.none(), st.integers(), st.text(max_size=5)),
        lambda i: st.lists(i) | st.dictionaries(st.text(max_size=5), i),
        max_leaves=8,
    ).map(lambda d: json.dumps(d).encode()),
)


@fuzz(100)
@given(
    content_type=content_types,
    headers=st.lists(st.tuples(header_names, header_values), max_size=6),
    body=bodies,
)
async def test_a_real_server_answers_any_request_with_2xx_or_a_4xx_problem(
    http_url: str, content_type: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    sent: list[tuple[str, str]] = [*headers]
    if content_type:
        sent.append(("Content-Type", content_type))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{http_url}/events", data=body, headers=CIMultiDict(sent), skip_auto_headers=["Content-Type"]
        ) as answer,
    ):
        payload: Any = await answer.read()
        assert answer.status < 500, (answer.status, payload)
        if answer.status >= 400:
            assert answer.content_type == "application/problem+json", payload
            problem = json.loads(payload)
            assert problem["status"] == answer.status and problem["detail"]
        else:
            assert answer.status in (200, 202), payload

"""Conversions with an API key, through the plugin manager, against the RD double on a real port."""

from __future__ import annotations

import json
import socket

from conftest import CART, NOW, Rig, delivery

from eventbus.model import Event, StoredEvent
from eventbus.plugin import Delivery, DestinationResult, Outcome

KEY = "rd-api-key"


async def test_a_conversion_is_sent_with_the_api_key(rig: Rig) -> None:
    result = await rig.deliver(rig.api_key_options())

    assert result.outcome is Outcome.SUCCESS
    assert result.status_code == 200
    assert result.response is not None and b"event_uuid" in result.response.body
    [request] = rig.double.requests
    assert (request.path, request.query) == ("/platform/conversions", {"api_key": KEY})
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {
        "event_type": "CONVERSION",
        "event_family": "CDP",
        "payload": {
            "conversion_identifier": "carrinho-abandonado",
            "email": "lead@example.com",
            "name": "Lead",
            "tags": ["loja", "site"],
        },
    }
    assert rig.double.events[0]["via"] == "api_key"


async def test_a_refused_key_alerts_without_showing_it(rig: Rig) -> None:
    rig.double.api_keys = {"another-key"}
    result = await rig.deliver(rig.api_key_options())

    assert (result.outcome, result.error_class, result.alert, result.status_code) == (Outcome.RETRY, "auth", True, 401)
    assert result.reason is not None
    assert "RD Station refused the API key" in result.reason and "UNAUTHORIZED" in result.reason
    assert KEY not in result.reason


async def test_a_quoted_key_never_reaches_a_reason(rig: Rig) -> None:
    # Even if RD echoed the key back in an error message, the reason shows *** instead.
    rig.double.api_keys = {"k&y=1"}
    rig.double.fail_next(400, {"errors": [{"error_type": "INVALID", "error_message": "bad key k&y=1 / k%26y%3D1"}]})
    result = await _deliver_with_key(rig, "k&y=1")

    assert result.outcome is Outcome.REJECT
    assert result.reason is not None and "k&y=1" not in result.reason and "k%26y%3D1" not in result.reason
    assert rig.double.requests[0].query == {"api_key": "k&y=1"}  # quoted in the URL, read back intact


async def _deliver_with_key(rig: Rig, key: str) -> DestinationResult:
    options = rig.destination.validate_options({"base_url": rig.base_url, "api_key": key, "mapping": _conversion()})
    return await rig.deliver(options)


def _conversion() -> dict[str, object]:
    return {"payload": {"conversion_identifier": "form", "email": "$.data.customer.email"}}


async def test_an_event_without_the_required_field_is_rejected_unsent(rig: Rig) -> None:
    result = await rig.deliver(rig.api_key_options(), delivery({"customer": {"name": "No Email"}}))

    assert (result.outcome, result.error_class) == (Outcome.REJECT, "mapping")
    assert result.reason == (
        "the event does not map to an RD event: payload field email (from $.data.customer.email): "
        "is absent in the event, and RD requires it for CONVERSION"
    )
    assert rig.double.requests == []


async def test_a_body_over_rd_limit_is_rejected_unsent(rig: Rig) -> None:
    mapping = {"payload": {**_conversion()["payload"], "cf_notes": "$.data.notes"}}  # type: ignore[dict-item]
    big = delivery({**CART, "notes": "x" * 200_000})
    result = await rig.deliver(rig.api_key_options(mapping), big)

    assert (result.outcome, result.error_class) == (Outcome.REJECT, "too_large")
    assert result.reason is not None and "RD Station accepts at most 200000 (0.2 MB)" in result.reason
    assert rig.double.requests == []


async def test_just_under_the_limit_is_sent(rig: Rig) -> None:
    mapping = {"payload": {**_conversion()["payload"], "cf_notes": "$.data.notes"}}  # type: ignore[dict-item]
    envelope = {"event_type": "CONVERSION", "event_family": "CDP", "payload": {}}
    overhead = len(json.dumps(envelope, separators=(",", ":"))) + len(
        '"conversion_identifier":"form","email":"lead@example.com","cf_notes":""'
    )
    result = await rig.deliver(rig.api_key_options(mapping), delivery({**CART, "notes": "x" * (200_000 - overhead)}))

    assert result.outcome is Outcome.SUCCESS
    assert rig.double.requests[0].size == 200_000


async def test_connection_refused_is_retried_with_its_class(rig: Rig) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = rig.destination.validate_options(
        {"base_url": f"http://127.0.0.1:{port}", "api_key": KEY, "mapping": _conversion()}
    )
    result = await rig.deliver(options)

    assert (result.outcome, result.error_class, result.status_code) == (Outcome.RETRY, "connect", None)
    assert result.reason is not None and result.reason.startswith("no answer from RD Station: cannot connect")
    assert KEY not in result.reason


async def test_a_nan_in_the_event_is_rejected_unsent_not_a_crash(rig: Rig) -> None:
    # A valid event holds no NaN, but JSON bytes published as such are parsed as they come: reject, clearly.
    data = b'{"customer": {"email": "lead@example.com"}, "amount": NaN}'
    event = Event.create(
        type="cart.abandoned", source="/shop", id="nan-1", data=data, datacontenttype="application/json"
    )
    mapping = {"payload": {**_conversion()["payload"], "cf_amount": "$.data.amount"}}  # type: ignore[dict-item]
    result = await rig.deliver(
        rig.api_key_options(mapping), Delivery("dlv_1", "sub_test", StoredEvent(event, "evt_1", 1, NOW), 1, NOW)
    )

    assert (result.outcome, result.error_class) == (Outcome.REJECT, "mapping")
    assert result.reason is not None and "NaN or an infinity" in result.reason
    assert rig.double.requests == []

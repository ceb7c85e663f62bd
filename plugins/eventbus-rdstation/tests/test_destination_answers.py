"""How RD's answers become results: each error-body shape in the reason, rejects, retries, delays and alerts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import NOW, Rig, delivery
from eventbus_rdstation.rd_errors import MAX_REASON, describe

from eventbus.plugin import DestinationResult, Outcome

EVENTS = "/platform/events"
SHAPES = {
    "flat": (
        {"error_type": "CONFLICTING_FIELD", "error_message": "The payload contains conflicting fields."},
        "HTTP 400: CONFLICTING_FIELD: The payload contains conflicting fields.",
    ),
    "errors hash": (
        {"errors": {"error_type": "CANNOT_BE_BLANK", "error_message": "Cannot be blank."}},
        "HTTP 400: CANNOT_BE_BLANK: Cannot be blank.",
    ),
    "hash of arrays": (
        {
            "errors": {
                "email": [{"error_type": "CANNOT_BE_NULL", "error_message": "Cannot be null."}],
                "name": "too long",
            }
        },
        "HTTP 400: CANNOT_BE_NULL at email: Cannot be null.; at name: too long",
    ),
    "array of hashes": (
        {
            "errors": [
                {
                    "error_type": "INVALID_OPTION",
                    "error_message": "Must be one of the valid options.",
                    "validation_rules": {"valid_options": ["CONVERSION", "SALE"]},
                    "path": "$.body.event_type",
                },
                {"error_type": "CANNOT_BE_NULL", "error_message": "Cannot be null.", "path": "$.body.payload.email"},
            ]
        },
        "HTTP 400: INVALID_OPTION at $.body.event_type: Must be one of the valid options. (valid options: CONVERSION,"
        " SALE); CANNOT_BE_NULL at $.body.payload.email: Cannot be null.",
    ),
    "error": ({"error": "Bad Request"}, "HTTP 400: Bad Request"),
    "oauth error": (
        {"error": "invalid_request", "error_description": "Missing field"},
        "HTTP 400: invalid_request: Missing field",
    ),
    "message": ({"message": "Internal validation failed"}, "HTTP 400: Internal validation failed"),
}
# Refusals with no RD error in them: a firewall's or proxy's page, not RD judging the event.
NOT_RD = {
    "html": ("<html><body>Bad Request</body></html>", "with an unreadable body (37 bytes, not an RD error document)"),
    "empty": ("", "with an empty body"),
    "json but no error": ([1, 2, 3], "with an unreadable body (9 bytes, not an RD error document)"),
    "json object but no error": ({"status": "blocked"}, "with an unreadable body (21 bytes, not an RD error document)"),
}


async def answer(rig: Rig, status: int, body: object = b"", headers: dict[str, str] | None = None) -> DestinationResult:
    rig.double.fail_next(status, body, headers=headers, path=EVENTS)
    return await rig.deliver(rig.oauth_options())


@pytest.mark.parametrize("shape", SHAPES)
async def test_each_error_shape_lands_in_the_rejection(rig: Rig, shape: str) -> None:
    body, text = SHAPES[shape]
    result = await answer(rig, 400, body)

    assert (result.outcome, result.error_class, result.status_code) == (Outcome.REJECT, "validation", 400)
    assert result.reason == f"RD Station refused the event: {text}"
    assert result.response is not None and result.response.status == 400


@pytest.mark.parametrize("status", [400, 409, 413, 422])
@pytest.mark.parametrize("shape", NOT_RD)
async def test_a_refusal_without_an_rd_error_is_retried_with_an_alert(rig: Rig, shape: str, status: int) -> None:
    body, text = NOT_RD[shape]
    result = await answer(rig, status, body)

    assert (result.outcome, result.error_class, result.alert, result.status_code) == (
        Outcome.RETRY,
        "endpoint",
        True,
        status,
    )
    assert result.reason == (
        f"RD Station answered HTTP {status} {text}: check the subscription's base_url (a proxy or firewall may be "
        "answering)"
    )
    assert result.response is not None and result.response.status == status


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ("<html><body>Welcome</body></html>", "with a body that is not JSON (33 bytes)"),
        ("", "with an empty body"),
        ({"ok": True}, "with a JSON body lacking a string event_uuid"),
        ({"event_uuid": 42}, "with a JSON body lacking a string event_uuid"),
        ({"event_uuid": ""}, "with a JSON body lacking a string event_uuid"),
        (["event_uuid"], "with a JSON body lacking a string event_uuid"),
    ],
)
@pytest.mark.parametrize("status", [200, 201])
async def test_a_2xx_without_rd_event_uuid_is_retried_with_an_alert(
    rig: Rig, body: object, text: str, status: int
) -> None:
    result = await answer(rig, status, body)

    assert (result.outcome, result.error_class, result.alert, result.status_code) == (
        Outcome.RETRY,
        "endpoint",
        True,
        status,
    )
    assert result.reason == (
        f"HTTP {status} {text}, not RD Station's event_uuid: check the subscription's base_url (a proxy or another "
        "server answered)"
    )


async def test_a_204_from_the_events_endpoint_and_a_page_from_the_conversions_endpoint_are_retried(rig: Rig) -> None:
    no_content = await answer(rig, 204)
    rig.double.fail_next(200, "<html>portal</html>", path="/platform/conversions")
    conversion = await rig.deliver(rig.api_key_options())

    assert (no_content.outcome, no_content.error_class, no_content.alert) == (Outcome.RETRY, "endpoint", True)
    assert (conversion.outcome, conversion.error_class, conversion.alert) == (Outcome.RETRY, "endpoint", True)
    assert rig.double.events == []  # nothing reached the double's own (accepting) handler


@pytest.mark.parametrize(("status", "body"), [(200, ""), (204, ""), (200, {"ok": True}), (201, {})])
async def test_the_conversions_endpoint_answering_json_or_nothing_is_taken_as_sent(
    rig: Rig, status: int, body: object
) -> None:
    # RD documents {"event_uuid"} for /platform/events only: a conversion sent again would fire automations twice.
    rig.double.fail_next(status, body, path="/platform/conversions")
    result = await rig.deliver(rig.api_key_options())
    assert (result.outcome, result.status_code) == (Outcome.SUCCESS, status)


@pytest.mark.parametrize("status", [409, 413, 422])
async def test_other_refusals_of_the_event_are_rejected(rig: Rig, status: int) -> None:
    result = await answer(rig, status, {"errors": [{"error_type": "INVALID", "error_message": "no"}]})
    assert (result.outcome, result.error_class, result.status_code) == (Outcome.REJECT, "validation", status)


async def test_rd_own_validation_is_a_rejection(rig: Rig) -> None:
    mapping = {"event_type": "CHAT_STARTED", "payload": {"email": "$.data.customer.email"}}
    result = await rig.deliver(rig.oauth_options(mapping))

    assert result.outcome is Outcome.REJECT
    assert result.reason == (
        "RD Station refused the event: HTTP 400: INVALID_OPTION at $.body.event_type: Must be one of the valid "
        "options. (valid options: CONVERSION, OPPORTUNITY, OPPORTUNITY_LOST, SALE, ORDER_PLACED, ORDER_PLACED_ITEM)"
    )


async def test_reasons_are_bounded(rig: Rig) -> None:
    many = {"errors": [{"error_type": f"E{i}", "error_message": "x" * 150, "path": f"$.p{i}"} for i in range(30)]}
    result = await answer(rig, 422, many)
    assert result.reason is not None and len(result.reason) <= len("RD Station refused the event: ") + MAX_REASON
    assert result.reason.endswith("…")


@pytest.mark.parametrize(
    ("headers", "body", "delay"),
    [
        ({"Retry-After": "30"}, {"error": "Too Many Requests", "remaining_time_ms": 45000}, 30),
        ({"Retry-After": "Fri, 01 May 2026 12:02:00 GMT"}, "", 120),
        ({}, {"error": "Too Many Requests", "max_requests": 120, "current_usage": 121, "remaining_time_ms": 45000}, 45),
        ({}, {"error": "Too Many Requests", "remaining_time_ms": 1}, 1),
        ({"Retry-After": "soon"}, "<html>slow down</html>", 60),
    ],
)
async def test_429_retries_after_rd_delay(rig: Rig, headers: dict[str, str], body: object, delay: int) -> None:
    result = await answer(rig, 429, body, headers)
    assert (result.outcome, result.error_class, result.status_code) == (Outcome.RETRY, "rate_limited", 429)
    assert result.retry_after == timedelta(seconds=delay)
    assert result.alert is False


async def test_the_double_rate_limit_reaches_the_destination(rig: Rig) -> None:
    rig.double.rate_limit = 1
    options = rig.oauth_options()
    assert (await rig.deliver(options)).outcome is Outcome.SUCCESS
    rig.double.clock.now += 15  # type: ignore[attr-defined]
    result = await rig.deliver(options)
    assert (result.error_class, result.retry_after) == ("rate_limited", timedelta(seconds=45))


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        (500, {"errors": [{"error_type": "INTERNAL", "error_message": "oops"}]}, "server"),
        (502, "<html><h1>502 Bad Gateway</h1></html>", "server"),
        (504, "", "server"),
        (302, "", "http"),
        (410, "", "http"),
    ],
)
async def test_server_failures_and_oddities_are_retried(rig: Rig, status: int, body: object, error_class: str) -> None:
    result = await answer(rig, status, body)
    assert (result.outcome, result.error_class, result.status_code, result.alert) == (
        Outcome.RETRY,
        error_class,
        status,
        False,
    )
    assert result.reason is not None and result.reason.startswith(f"RD Station answered HTTP {status}")
    assert result.retry_after is None


async def test_a_503_retry_after_is_honoured(rig: Rig) -> None:
    result = await answer(rig, 503, "", {"Retry-After": "90"})
    assert (result.error_class, result.retry_after) == ("server", timedelta(seconds=90))


async def test_403_retries_with_an_alert(rig: Rig) -> None:
    result = await answer(rig, 403, {"errors": {"error_type": "ACCESS_DENIED", "error_message": "Plan limit."}})
    assert (result.outcome, result.error_class, result.alert) == (Outcome.RETRY, "forbidden", True)
    assert result.reason is not None and "ACCESS_DENIED: Plan limit." in result.reason


async def test_a_bare_404_blames_the_url_and_an_explained_one_the_event(rig: Rig) -> None:
    bare = await answer(rig, 404, "<html>Not Found</html>")
    explained = await answer(rig, 404, {"errors": [{"error_type": "RESOURCE_NOT_FOUND", "error_message": "No lead"}]})

    assert (bare.outcome, bare.error_class, bare.alert) == (Outcome.RETRY, "endpoint", True)
    assert bare.reason is not None and "check the subscription's base_url" in bare.reason
    assert (explained.outcome, explained.error_class) == (Outcome.REJECT, "validation")


async def test_success_keeps_rd_answer(rig: Rig) -> None:
    result = await rig.deliver(rig.oauth_options(), delivery())
    assert result.response is not None
    assert result.response.body.startswith(b'{"event_uuid": "')
    assert rig.double.events[0]["payload"] == {"email": "lead@example.com", "value": 199.9, "funnel_name": "default"}
    assert NOW.tzinfo is not None


def test_describe_cuts_long_messages() -> None:
    assert describe(400, b'{"error": "' + b"y" * 1000 + b'"}', limit=50).endswith("…")
    assert len(describe(400, b'{"error": "' + b"y" * 1000 + b'"}', limit=50)) == 50

"""The scrubber (defense in depth: nothing should log a secret in the first place), the request-id rule, and log
context that never outlives the request, call or delivery that bound it."""

from __future__ import annotations

import asyncio
import logging

import pytest
import structlog

from eventbus.logs import (
    MAX_LOGGED_EVENT_IDS,
    REDACTED,
    RedactingFilter,
    bind_delivery,
    bind_event_ids,
    redact_secrets,
    request_id_of,
    scoped_context,
    scrub_text,
)
from tests.observability.conftest import CapturedLogs

KEY = "ebk_abc123_" + "s" * 40
ENDPOINT_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"the key {KEY} was refused", KEY),
        (f"signing with {ENDPOINT_SECRET}.", ENDPOINT_SECRET),
        ("whsk_c2VjcmV0LWVkMjU1MTkta2V5LWJ5dGVz", "c2VjcmV0LWVkMjU1MTkta2V5LWJ5dGVz"),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1a,AAAAAAAAAAAAAAAAAAAAAA==", "K5oZfz"),
        ("X-Hub-Signature-256: sha256=" + "ab" * 32, "ab" * 32),
        ("Stripe-Signature: t=1492774577,v1=" + "5f" * 32, "5f" * 32),
        ("POST https://h.example/in?a=1&token=tok-123&b=2", "tok-123"),
        ("GET /cb?code=one-time-code#x", "one-time-code"),
        ("https://h.example/?API_KEY=k-99", "k-99"),
    ],
)
def test_credential_shapes_are_scrubbed_from_text(text: str, secret: str) -> None:
    scrubbed = scrub_text(text)
    assert secret not in scrubbed and REDACTED in scrubbed


def test_ordinary_text_is_left_alone() -> None:
    for text in ("delivery dlv_01J2 to sub_01J3 answered HTTP 500", "order.paid", "a=1&b=2", "v1 of the API", ""):
        assert scrub_text(text) == text


def test_keys_named_like_credentials_are_blanked_and_nested_values_scrubbed() -> None:
    event = {
        "event": "x",
        "Authorization": "Basic dXNlcjpwYXNz",
        "stripe-signature": "t=1,v1=00",
        "client_secret": "plain",
        "refresh_token": "plain",
        "status": 500,
        "headers": {"X-Hub-Signature-256": "whatever", "accept": "*/*"},
        "urls": ["https://a.example/?token=abc", None, 3],
        "note": f"the key was {KEY}",
    }
    out = redact_secrets(None, "info", dict(event))
    assert out["Authorization"] == out["stripe-signature"] == out["client_secret"] == out["refresh_token"] == REDACTED
    assert out["status"] == 500 and out["headers"] == {"X-Hub-Signature-256": REDACTED, "accept": "*/*"}
    assert out["urls"] == [f"https://a.example/?token={REDACTED}", None, 3]
    assert KEY not in out["note"] and out["event"] == "x"


def test_standard_library_records_are_scrubbed() -> None:
    args = (f"?token=t0k {KEY}",)
    record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "bad request %s", args, None)
    assert RedactingFilter().filter(record)
    assert "t0k" not in record.getMessage() and KEY not in record.getMessage()


@pytest.mark.parametrize(
    ("given", "kept"),
    [("req-1", True), ("a" * 128, True), ("a" * 129, False), ("has space", False), ("é", False), ("", False)],
)
def test_a_callers_request_id_is_kept_only_when_safe(given: str, kept: bool) -> None:
    chosen = request_id_of(given)
    assert (chosen == given) is kept
    if not kept:
        assert len(chosen) == 32 and chosen.isalnum()
    assert request_id_of(None) != request_id_of(None)


def test_scoped_context_restores_what_was_bound_before_including_keys_bound_inside(captured: CapturedLogs) -> None:
    log = structlog.get_logger("test")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(outer="kept", request_id="outer-request")
    try:
        with scoped_context(request_id="inner-request"):
            bind_event_ids(["evt_1"])
            log.info("inside")
        log.info("after")
    finally:
        structlog.contextvars.clear_contextvars()
    inside, after = captured.one("inside"), captured.one("after")
    assert (inside["request_id"], inside["event_id"], inside["outer"]) == ("inner-request", "evt_1", "kept")
    assert (after["request_id"], after["outer"]) == ("outer-request", "kept") and "event_id" not in after


def test_many_event_ids_are_listed_only_in_part(captured: CapturedLogs) -> None:
    with scoped_context():
        bind_event_ids(f"evt_{n}" for n in range(1000))
        structlog.get_logger("test").info("batch")
    line = captured.one("batch")
    assert line["event_count"] == 1000 and len(line["event_ids"]) == MAX_LOGGED_EVENT_IDS


async def test_a_delivery_binds_its_ids_only_in_its_own_task(captured: CapturedLogs) -> None:
    log = structlog.get_logger("test")

    async def send(delivery: str) -> None:
        bind_delivery(delivery, "sub_1", "evt_1")
        log.info("sending")

    with scoped_context(request_id="r-1"):
        # A send started from a request's task inherits a copy of its context: the send starts from nothing.
        await asyncio.gather(asyncio.create_task(send("dlv_1")), asyncio.create_task(send("dlv_2")))
        log.info("request_goes_on")
    sends = captured.named("sending")
    assert sorted(line["delivery_id"] for line in sends) == ["dlv_1", "dlv_2"]
    assert all("request_id" not in line and line["subscription_id"] == "sub_1" for line in sends)
    after = captured.one("request_goes_on")
    assert after["request_id"] == "r-1" and "delivery_id" not in after

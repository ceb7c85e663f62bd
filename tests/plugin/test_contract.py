"""The contract's values: request helpers, result rules, destination results."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eventbus.model import Event
from eventbus.plugin import (
    Accepted,
    CustomResponse,
    DestinationResult,
    Headers,
    InboundRequest,
    Outcome,
    Refused,
    SourceConfig,
)


def test_headers_are_case_insensitive_and_keep_repeats() -> None:
    headers = Headers.of([("X-Hub-Signature-256", "sha256=ab"), ("Via", "a"), ("via", "b")])
    request = InboundRequest("POST", "/hooks/gh", query=(("a", "1"), ("a", "2")), headers=headers, body=b"{}")

    assert request.header("x-hub-signature-256") == "sha256=ab"
    assert headers.get_all("VIA") == ("a", "b")
    assert "X-HUB-SIGNATURE-256" in headers
    assert "missing" not in headers
    assert request.header("missing") is None
    assert request.query_value("a") == "1"
    assert request.query_value("A") is None
    assert Headers.of({"Content-Type": "application/json"}).get("content-type") == "application/json"


def test_source_names_the_event_source() -> None:
    assert SourceConfig("gh-main", "github", ("new", "old")).event_source == "/hooks/gh-main"


def test_accepted_needs_events_and_freezes_them() -> None:
    event = Event.create(type="echo.x", source="/hooks/s", id="1")
    accepted = Accepted([event], dedup_key="1")
    assert accepted.events == (event,)
    with pytest.raises(ValueError, match="at least one event"):
        Accepted([])
    with pytest.raises(TypeError, match="Event values"):
        Accepted([{"type": "echo.x"}])  # type: ignore[list-item]


def test_refusals_are_4xx_with_a_reason() -> None:
    assert Refused.unauthorized("bad signature", "X-Sig") == Refused(401, "bad signature", "X-Sig")
    assert Refused.bad_request("not JSON").status == 400
    with pytest.raises(ValueError, match="4xx"):
        Refused(500, "oops")
    with pytest.raises(ValueError, match="say why"):
        Refused(401, "")


def test_custom_responses() -> None:
    challenge = CustomResponse.json({"challenge": "abc"})
    assert (challenge.status, challenge.body) == (200, b'{"challenge":"abc"}')
    assert ("Content-Type", "application/json") in challenge.headers
    assert CustomResponse.text("abc").body == b"abc"
    with pytest.raises(ValueError, match="200-599"):
        CustomResponse(101)


def test_destination_results() -> None:
    assert DestinationResult.success().outcome is Outcome.SUCCESS
    retry = DestinationResult.retry("429 from the API", delay=30, status_code=429)
    assert (retry.outcome, retry.retry_after, retry.status_code) == (Outcome.RETRY, timedelta(seconds=30), 429)
    assert DestinationResult.retry(delay=timedelta(minutes=1)).retry_after == timedelta(minutes=1)
    assert DestinationResult.reject("contact deleted").reason == "contact deleted"
    with pytest.raises(ValueError, match="reason"):
        DestinationResult(Outcome.REJECT)
    with pytest.raises(ValueError, match="retry only"):
        DestinationResult(Outcome.SUCCESS, retry_after=timedelta(seconds=1))
    with pytest.raises(ValueError, match="non-negative"):
        DestinationResult.retry(delay=-1)

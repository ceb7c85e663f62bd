"""The slack connector against Slack's documented signature vector and every refusal."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from datetime import UTC, datetime, timedelta

import pytest
from eventbus_slack import SlackConnector

from eventbus.errors import InvalidArgumentError
from eventbus.model import Event
from eventbus.plugin import Accepted, CustomResponse, Headers, InboundRequest, Refused, SourceConfig

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TS = 1531420618
NOW = datetime.fromtimestamp(TS, UTC)
COMMAND = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
    b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
    b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
COMMAND_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
FORM = "application/x-www-form-urlencoded"
SOURCE = SourceConfig("slack", "slack", secrets=(SECRET,))
MENTION = json.dumps(
    {
        "token": "XXYYZZ",
        "team_id": "T123ABC456",
        "api_app_id": "A123ABC456",
        "event": {"type": "app_mention", "user": "U123ABC456", "text": "<@U0LAN0Z89> hi", "channel": "C123ABC456"},
        "type": "event_callback",
        "event_id": "Ev123ABC456",
        "event_time": 1531420610,
    }
).encode()


def sign(body: bytes, ts: int = TS, secret: str = SECRET) -> str:
    return "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()


def post(
    body: bytes,
    content_type: str | None = "application/json",
    *,
    signature: str | None = None,
    ts: str | None = str(TS),
    secret: str = SECRET,
    **extra: str,
) -> InboundRequest:
    headers: dict[str, str] = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if ts is not None:
        headers["X-Slack-Request-Timestamp"] = ts
    headers["X-Slack-Signature"] = signature if signature is not None else sign(body, secret=secret)
    headers.update(extra)
    return InboundRequest("POST", "/hooks/slack", headers=Headers.of(headers), body=body)


async def handle(
    request: InboundRequest, source: SourceConfig = SOURCE, now: datetime = NOW
) -> Accepted | Refused | CustomResponse:
    return await SlackConnector().handle(request, source, now)


async def accepted(request: InboundRequest, source: SourceConfig = SOURCE) -> tuple[Event, str | None]:
    result = await handle(request, source)
    assert isinstance(result, Accepted), result
    (event,) = result.events
    return event, result.dedup_key


async def refused(request: InboundRequest, status: int, field: str, now: datetime = NOW) -> Refused:
    result = await handle(request, now=now)
    assert isinstance(result, Refused), result
    assert (result.status, result.field) == (status, field), result
    return result


async def test_the_documented_slash_command_is_accepted() -> None:
    assert sign(COMMAND) == COMMAND_SIGNATURE
    event, dedup_key = await accepted(post(COMMAND, FORM, signature=COMMAND_SIGNATURE))
    assert event.type == "slack.command.webhook-collect"
    assert event.source == "/hooks/slack"
    assert event.id == dedup_key == hashlib.sha256(COMMAND).hexdigest()
    assert event.subject == "G8PSS9T3V"
    assert event.time == NOW
    data = event.json_data()
    assert data["command"] == "/webhook-collect"
    assert data["trigger_id"] == "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    assert data["text"] == ""


async def test_url_verification_is_answered_with_the_challenge() -> None:
    body = b'{"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}'  # noqa: E501
    result = await handle(post(body))
    assert isinstance(result, CustomResponse)
    assert result.status == 200
    assert json.loads(result.body) == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    assert ("Content-Type", "application/json") in result.headers


async def test_url_verification_is_answered_only_after_verifying() -> None:
    body = b'{"challenge": "abc", "type": "url_verification"}'
    await refused(post(body, signature=sign(body, secret="not the secret")), 401, "X-Slack-Signature")


async def test_an_event_callback_becomes_one_event_deduplicated_on_the_event_id() -> None:
    event, dedup_key = await accepted(post(MENTION))
    assert event.type == "slack.app_mention"
    assert event.id == dedup_key == "Ev123ABC456"
    assert event.subject == "C123ABC456"
    assert event.time == datetime.fromtimestamp(1531420610, UTC)
    assert event.data == MENTION


async def test_a_retry_carries_the_same_event_id_so_it_deduplicates() -> None:
    later = TS + 60
    retry = post(MENTION, ts=str(later), signature=sign(MENTION, later), **{"X-Slack-Retry-Num": "1"})
    result = await handle(retry, now=NOW + timedelta(seconds=60))
    assert isinstance(result, Accepted)
    assert result.dedup_key == "Ev123ABC456" == result.events[0].id


async def test_a_reaction_takes_the_item_channel_as_subject() -> None:
    body = json.dumps(
        {
            "type": "event_callback",
            "event_id": "Ev2",
            "event": {"type": "reaction_added", "reaction": "thumbsup", "item": {"type": "message", "channel": "C9"}},
        }
    ).encode()
    event, _ = await accepted(post(body))
    assert (event.type, event.subject) == ("slack.reaction_added", "C9")


async def test_another_envelope_type_is_accepted_with_the_body_digest_as_id() -> None:
    body = b'{"token": "x", "team_id": "T1", "minute_rate_limited": 1518467820, "api_app_id": "A1", "type": "app_rate_limited"}'  # noqa: E501
    event, dedup_key = await accepted(post(body))
    assert event.type == "slack.app_rate_limited"
    assert event.id == dedup_key == hashlib.sha256(body).hexdigest()


async def test_an_interaction_payload_is_accepted() -> None:
    payload = json.dumps({"type": "block_actions", "trigger_id": "1.2.3", "channel": {"id": "C5"}, "actions": []})
    body = urllib.parse.urlencode({"payload": payload}).encode()
    event, _ = await accepted(post(body, FORM))
    assert (event.type, event.subject) == ("slack.interaction.block_actions", "C5")
    assert event.data == payload.encode()


async def test_both_secrets_verify_during_a_rotation() -> None:
    rotating = SourceConfig("slack", "slack", secrets=("the-new-secret", SECRET))
    await accepted(post(MENTION), rotating)
    await accepted(post(MENTION, secret="the-new-secret"), rotating)


async def test_the_tolerance_edges_are_accepted() -> None:
    for now in (NOW + timedelta(seconds=300), NOW - timedelta(seconds=300)):
        assert isinstance(await handle(post(MENTION), now=now), Accepted)


# --- refusals -------------------------------------------------------------------------------------------------


async def test_a_missing_timestamp_is_refused() -> None:
    await refused(post(MENTION, ts=None), 401, "X-Slack-Request-Timestamp")


async def test_a_missing_signature_is_refused() -> None:
    request = InboundRequest(
        "POST", "/hooks/slack", headers=Headers.of({"X-Slack-Request-Timestamp": str(TS)}), body=MENTION
    )
    await refused(request, 401, "X-Slack-Signature")


@pytest.mark.parametrize("signature", ["v1=" + "a" * 64, "v0=xyz", "a" * 64])
async def test_a_malformed_signature_is_refused(signature: str) -> None:
    await refused(post(MENTION, signature=signature), 401, "X-Slack-Signature")


async def test_another_secret_is_refused_without_leaking_anything() -> None:
    result = await refused(post(MENTION, secret="not-the-secret"), 401, "X-Slack-Signature")
    assert SECRET not in result.reason and sign(MENTION).removeprefix("v0=") not in result.reason


async def test_a_flipped_body_byte_is_refused() -> None:
    await refused(
        post(COMMAND.replace(b"foobar", b"foobaz"), FORM, signature=COMMAND_SIGNATURE), 401, "X-Slack-Signature"
    )


async def test_a_signature_replayed_with_another_timestamp_is_refused() -> None:
    await refused(post(COMMAND, FORM, signature=COMMAND_SIGNATURE, ts=str(TS + 1)), 401, "X-Slack-Signature")


async def test_a_stale_timestamp_is_refused() -> None:
    result = await refused(post(MENTION), 401, "X-Slack-Request-Timestamp", now=NOW + timedelta(seconds=301))
    assert "301 s old" in result.reason


async def test_a_future_timestamp_is_refused() -> None:
    result = await refused(post(MENTION), 401, "X-Slack-Request-Timestamp", now=NOW - timedelta(seconds=301))
    assert "future" in result.reason


@pytest.mark.parametrize("ts", ["1531420618.5", "+1531420618", "now"])
async def test_a_timestamp_that_is_not_unix_seconds_is_refused(ts: str) -> None:
    await refused(post(MENTION, ts=ts, signature=sign(MENTION)), 401, "X-Slack-Request-Timestamp")


async def test_malformed_json_is_refused() -> None:
    await refused(post(b'{"type": "event_callback",'), 400, "body")


async def test_invalid_utf8_is_refused() -> None:
    await refused(post(b'{"type": "event_callback", "x": "\xff"}'), 400, "body")


async def test_a_form_body_sent_as_json_is_refused() -> None:
    await refused(post(COMMAND), 400, "body")


async def test_a_json_body_sent_as_a_form_is_refused() -> None:
    result = await refused(post(MENTION, FORM), 400, "body")
    assert "neither a command" in result.reason


async def test_another_content_type_is_refused() -> None:
    await refused(post(b"hello", "text/plain"), 400, "body")


async def test_an_event_callback_without_an_event_id_is_refused() -> None:
    body = b'{"type": "event_callback", "event": {"type": "message"}}'
    await refused(post(body), 400, "body.event_id")


async def test_an_event_callback_without_an_event_type_is_refused() -> None:
    body = b'{"type": "event_callback", "event_id": "Ev1", "event": {}}'
    await refused(post(body), 400, "body.event.type")


async def test_a_url_verification_without_a_challenge_is_refused() -> None:
    await refused(post(b'{"type": "url_verification"}'), 400, "body.challenge")


async def test_a_body_without_a_type_is_refused() -> None:
    await refused(post(b'{"event_id": "Ev1"}'), 400, "body.type")


async def test_a_command_that_cannot_be_a_type_segment_is_refused() -> None:
    body = b"command=%2Fdo+it&channel_id=C1"
    await refused(post(body, FORM), 400, "body.command")


async def test_an_interaction_payload_that_is_not_json_is_refused() -> None:
    await refused(post(b"payload=%7Bnope", FORM), 400, "body.payload")


def test_options_are_refused_naming_the_field() -> None:
    assert SlackConnector().validate_options({}) == {}
    with pytest.raises(InvalidArgumentError) as caught:
        SlackConnector().validate_options({"team": "T1"})
    assert caught.value.violations[0].field == "options.team"

"""The github connector against GitHub's documented signature vector and every refusal."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from datetime import UTC, datetime

import pytest
from eventbus_github import GitHubConnector

from eventbus.errors import InvalidArgumentError
from eventbus.model import Event
from eventbus.plugin import Accepted, Headers, InboundRequest, Refused, SourceConfig

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SECRET = "It's a Secret to Everybody"
OLD_SECRET = "the secret before the rotation"
SOURCE = SourceConfig("gh", "github", secrets=(SECRET,))
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
PUSH = json.dumps(
    {"ref": "refs/heads/main", "repository": {"id": 1296269, "full_name": "octocat/Hello-World"}},
    separators=(",", ":"),
).encode()


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery(
    body: bytes,
    *,
    event: str | None = "push",
    signature: str | None = None,
    content_type: str | None = "application/json",
    secret: str = SECRET,
) -> InboundRequest:
    headers = {"X-GitHub-Delivery": DELIVERY, "User-Agent": "GitHub-Hookshot/044aadd"}
    if event is not None:
        headers["X-GitHub-Event"] = event
    if content_type is not None:
        headers["Content-Type"] = content_type
    headers["X-Hub-Signature-256"] = signature if signature is not None else sign(body, secret)
    return InboundRequest("POST", "/hooks/gh", headers=Headers.of(headers), body=body)


async def handle(request: InboundRequest, source: SourceConfig = SOURCE) -> Accepted | Refused:
    result = await GitHubConnector().handle(request, source, NOW)
    assert isinstance(result, Accepted | Refused)
    return result


async def accepted(request: InboundRequest, source: SourceConfig = SOURCE) -> Event:
    result = await handle(request, source)
    assert isinstance(result, Accepted), result
    assert len(result.events) == 1
    return result.events[0]


async def refused(request: InboundRequest, status: int, field: str) -> Refused:
    result = await handle(request)
    assert isinstance(result, Refused), result
    assert (result.status, result.field) == (status, field), result
    return result


def test_the_documented_vector_signs_as_github_says() -> None:
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(b"Hello, World!") == expected


async def test_the_documented_vector_verifies_and_only_its_body_is_refused() -> None:
    # `Hello, World!` is GitHub's signing example, not a webhook payload: past the signature, it is not JSON.
    request = delivery(
        b"Hello, World!", signature="sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )
    result = await refused(request, 400, "body")
    assert "not valid JSON" in result.reason


async def test_a_push_becomes_one_event_deduplicated_on_the_delivery_guid() -> None:
    result = await handle(delivery(PUSH))
    assert isinstance(result, Accepted)
    assert result.dedup_key == DELIVERY
    (event,) = result.events
    assert event.type == "github.push"
    assert event.source == "/hooks/gh"
    assert event.id == DELIVERY
    assert event.subject == "octocat/Hello-World"
    assert event.data == PUSH  # the raw body, byte for byte
    assert event.datacontenttype == "application/json"
    assert event.json_data()["ref"] == "refs/heads/main"


async def test_the_action_is_the_last_segment_and_the_number_narrows_the_subject() -> None:
    body = json.dumps(
        {"action": "opened", "number": 42, "pull_request": {"number": 42}, "repository": {"full_name": "o/r"}}
    ).encode()
    event = await accepted(delivery(body, event="pull_request"))
    assert event.type == "github.pull_request.opened"
    assert event.subject == "o/r#42"


async def test_an_issue_comment_takes_the_issue_number() -> None:
    body = json.dumps({"action": "created", "issue": {"number": 7}, "repository": {"full_name": "o/r"}}).encode()
    event = await accepted(delivery(body, event="issue_comment"))
    assert (event.type, event.subject) == ("github.issue_comment.created", "o/r#7")


async def test_an_organization_event_takes_the_login_as_subject() -> None:
    body = json.dumps({"action": "member_added", "organization": {"login": "octo-org"}}).encode()
    event = await accepted(delivery(body, event="organization"))
    assert (event.type, event.subject) == ("github.organization.member_added", "octo-org")


async def test_a_ping_is_accepted_as_an_event() -> None:
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1, "repository": {"full_name": "o/r"}}).encode()
    event = await accepted(delivery(body, event="ping"))
    assert (event.type, event.subject) == ("github.ping", "o/r")


async def test_a_form_encoded_delivery_carries_the_payload_field() -> None:
    payload = json.dumps({"action": "closed", "issue": {"number": 3}, "repository": {"full_name": "o/r"}})
    body = urllib.parse.urlencode({"payload": payload}).encode()
    event = await accepted(delivery(body, event="issues", content_type="application/x-www-form-urlencoded"))
    assert event.type == "github.issues.closed"
    assert event.data == payload.encode()
    assert event.datacontenttype == "application/json"


async def test_both_secrets_verify_during_a_rotation() -> None:
    rotating = SourceConfig("gh", "github", secrets=("the new secret", OLD_SECRET))
    assert (await accepted(delivery(PUSH, secret=OLD_SECRET), rotating)).id == DELIVERY
    assert (await accepted(delivery(PUSH, secret="the new secret"), rotating)).id == DELIVERY


async def test_upper_case_hex_is_accepted() -> None:
    signature = "sha256=" + sign(PUSH).removeprefix("sha256=").upper()
    await accepted(delivery(PUSH, signature=signature))


# --- refusals -------------------------------------------------------------------------------------------------


async def test_a_missing_signature_is_refused() -> None:
    request = InboundRequest(
        "POST", "/hooks/gh", headers=Headers.of({"X-GitHub-Event": "push", "X-GitHub-Delivery": "d"}), body=PUSH
    )
    result = await refused(request, 401, "X-Hub-Signature-256")
    assert "missing" in result.reason


async def test_the_sha1_signature_alone_is_refused_with_a_hint() -> None:
    sha1 = "sha1=" + hmac.new(SECRET.encode(), PUSH, hashlib.sha1).hexdigest()
    request = InboundRequest(
        "POST",
        "/hooks/gh",
        headers=Headers.of({"X-GitHub-Event": "push", "X-GitHub-Delivery": "d", "X-Hub-Signature": sha1}),
        body=PUSH,
    )
    result = await refused(request, 401, "X-Hub-Signature-256")
    assert "SHA-1" in result.reason


@pytest.mark.parametrize("signature", ["sha1=" + "a" * 40, "sha256=xyz", "sha256=" + "a" * 63, "a" * 64, ""])
async def test_a_malformed_signature_is_refused(signature: str) -> None:
    await refused(delivery(PUSH, signature=signature), 401, "X-Hub-Signature-256")


async def test_a_signature_with_another_secret_is_refused_without_leaking_anything() -> None:
    result = await refused(delivery(PUSH, secret="not the secret"), 401, "X-Hub-Signature-256")
    assert SECRET not in result.reason
    assert sign(PUSH).removeprefix("sha256=") not in result.reason


async def test_a_flipped_body_byte_is_refused() -> None:
    tampered = PUSH.replace(b"main", b"mait")
    await refused(delivery(tampered, signature=sign(PUSH)), 401, "X-Hub-Signature-256")


async def test_a_source_without_secrets_refuses_everything() -> None:
    result = await handle(delivery(PUSH), SourceConfig("gh", "github"))
    assert isinstance(result, Refused) and result.status == 401


async def test_malformed_json_is_refused() -> None:
    await refused(delivery(b'{"ref": '), 400, "body")


async def test_invalid_utf8_is_refused() -> None:
    await refused(delivery(b'{"ref": "\xff"}'), 400, "body")


async def test_a_json_body_that_is_not_an_object_is_refused() -> None:
    await refused(delivery(b"[1, 2]"), 400, "body")


async def test_a_form_body_sent_as_json_is_refused() -> None:
    body = urllib.parse.urlencode({"payload": PUSH.decode()}).encode()
    result = await refused(delivery(body), 400, "body")
    assert "not valid JSON" in result.reason


async def test_a_json_body_sent_as_a_form_is_refused() -> None:
    result = await refused(delivery(PUSH, content_type="application/x-www-form-urlencoded"), 400, "body")
    assert "payload" in result.reason


async def test_a_form_payload_that_is_not_json_is_refused() -> None:
    body = b"payload=%7Bnope"
    await refused(delivery(body, content_type="application/x-www-form-urlencoded"), 400, "body")


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/json; charset=latin-1"])
async def test_a_content_type_github_never_sends_is_refused(content_type: str) -> None:
    await refused(delivery(PUSH, content_type=content_type), 400, "body")


async def test_a_missing_event_header_is_refused() -> None:
    await refused(delivery(PUSH, event=None), 400, "X-GitHub-Event")


async def test_an_event_header_that_cannot_be_a_type_segment_is_refused() -> None:
    await refused(delivery(PUSH, event="push.x"), 400, "X-GitHub-Event")


async def test_a_missing_delivery_header_is_refused() -> None:
    headers = {"X-GitHub-Event": "push", "Content-Type": "application/json", "X-Hub-Signature-256": sign(PUSH)}
    request = InboundRequest("POST", "/hooks/gh", headers=Headers.of(headers), body=PUSH)
    await refused(request, 400, "X-GitHub-Delivery")


async def test_an_action_that_cannot_be_a_type_segment_is_refused() -> None:
    body = json.dumps({"action": "opened now"}).encode()
    await refused(delivery(body, event="issues"), 400, "body.action")


def test_options_are_refused_naming_the_field() -> None:
    connector = GitHubConnector()
    assert connector.validate_options({}) == {}
    with pytest.raises(InvalidArgumentError) as caught:
        connector.validate_options({"events": "push"})
    assert caught.value.violations[0].field == "options.events"

"""The rdstation connector: the URL token, secrets and options, RD Station CRM bodies, every refusal, containment."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

import pytest
from connector_rig import (
    BRT,
    NOW,
    OLD_TOKEN,
    SOURCE,
    TOKEN,
    UUID,
    accepted,
    digest,
    handle,
    one_event,
    refused,
    request,
)
from eventbus_rdstation.connector import RDStationConnector
from fixtures_inbound import CONVERTED, converted, crm, encode, lead, legacy

from eventbus.errors import InvalidArgumentError
from eventbus.plugin import (
    Accepted,
    ConnectorRegistry,
    Headers,
    InboundRequest,
    Plugins,
    Refused,
    SourceConfig,
    hookimpl,
    load_plugins,
)

# --- the token -------------------------------------------------------------------------------------------------


async def test_the_right_token_is_accepted() -> None:
    event = await one_event(request(CONVERTED))
    assert event.source == "/hooks/rd-leads"


async def test_a_missing_token_is_refused_401() -> None:
    result = await refused(request(CONVERTED, token=None), 401, "token")
    assert "?token=" in result.reason


async def test_an_empty_token_is_refused_as_missing() -> None:
    result = await refused(request(CONVERTED, token=""), 401, "token")
    assert "missing" in result.reason


async def test_a_wrong_token_is_refused_without_echoing_it() -> None:
    guess = "guessed-token-1234567890"
    result = await refused(request(CONVERTED, token=guess), 401, "token")
    assert guess not in result.reason
    assert TOKEN not in result.reason


async def test_a_token_that_differs_only_in_case_is_wrong() -> None:
    await refused(request(CONVERTED, token=TOKEN.upper()), 401, "token")


async def test_a_token_with_odd_characters_is_wrong_not_a_crash() -> None:
    await refused(request(CONVERTED, token="\udcff\ud800é"), 401, "token")


async def test_a_token_in_a_header_does_not_count() -> None:
    req = request(CONVERTED, token=None)
    req = InboundRequest(req.method, req.path, headers=Headers.of({"token": TOKEN}), body=req.body)
    await refused(req, 401, "token")


async def test_both_tokens_verify_during_a_rotation() -> None:
    rotating = SourceConfig("rd-leads", "rdstation", secrets=(TOKEN, OLD_TOKEN))
    assert (await accepted(request(CONVERTED, token=OLD_TOKEN), rotating)).events
    assert (await accepted(request(CONVERTED, token=TOKEN), rotating)).events
    result = await handle(request(CONVERTED, token="neither-of-the-two-tokens"), rotating)
    assert isinstance(result, Refused)
    assert result.status == 401


async def test_the_token_is_checked_before_the_body() -> None:
    await refused(request(b"not json", token=None), 401, "token")
    await refused(request(b"not json", token="wrong-token-wrong-token"), 401, "token")


async def test_the_token_is_in_no_event() -> None:
    result = await accepted(request(legacy(lead(), lead(uuid="other-uuid")), token=TOKEN))
    for event in result.events:
        assert TOKEN.encode() not in (event.data or b"")
        assert TOKEN not in f"{event.id} {event.subject} {event.type}"
    assert result.dedup_key is not None
    assert TOKEN not in result.dedup_key


# --- secrets and options ---------------------------------------------------------------------------------------


def test_a_generated_secret_is_url_safe_and_valid() -> None:
    connector = RDStationConnector()
    made = {connector.generate_secret() for _ in range(5)}
    assert len(made) == 5
    for secret in made:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)
    connector.validate_secrets(sorted(made))


def test_valid_secrets_pass() -> None:
    RDStationConnector().validate_secrets([TOKEN, "a" * 16, "A.b_c~d-0123456789"])


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("short-token-15c", "at least 16"),
        ("a" * 15, "at least 16"),
        ("has space in the token", "letters, digits"),
        ("token/with/a/slash/", "letters, digits"),
        ("token+with+a+plus+", "letters, digits"),
        ("token%20percent-escaped", "letters, digits"),
        ("tokén-with-an-accent", "letters, digits"),
        ("token&other=parameter", "letters, digits"),
    ],
)
def test_secrets_that_break_the_url_are_refused(secret: str, why: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"secrets\[1\]") as caught:
        RDStationConnector().validate_secrets([TOKEN, secret])
    assert why in str(caught.value.violations)


def test_no_options_are_taken() -> None:
    connector = RDStationConnector()
    assert connector.validate_options({}) == {}
    with pytest.raises(InvalidArgumentError, match=r"options\.event_identifiers"):
        connector.validate_options({"event_identifiers": ["newsletter"]})


# --- RD Station CRM ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_name", "event_type"),
    [
        ("crm_deal_created", "rdstation.crm.deal_created"),
        ("crm_deal_updated", "rdstation.crm.deal_updated"),
        ("crm_deal_deleted", "rdstation.crm.deal_deleted"),
    ],
)
async def test_a_crm_deal_event_becomes_one_event(event_name: str, event_type: str) -> None:
    body = encode(crm(event_name))
    result = await accepted(request(body))
    (event,) = result.events
    expected_id = digest(event_name, "5e8f1c2a9b3d4e0017a1b2c3", "2020-04-09T15:10:34.569-03:00")
    assert (event.type, event.subject, event.id) == (event_type, "5e8f1c2a9b3d4e0017a1b2c3", expected_id)
    assert result.dedup_key == expected_id
    assert event.data == body


async def test_a_crm_event_takes_its_time_from_updated_at_and_a_deletion_from_now() -> None:
    assert (await one_event(request(crm("crm_deal_updated")))).time == datetime(
        2020, 4, 9, 15, 10, 34, 569000, tzinfo=BRT
    )
    assert (await one_event(request(crm("crm_deal_deleted")))).time == NOW
    assert (await one_event(request(crm("crm_deal_updated", updated_at="yesterday")))).time == NOW


async def test_each_update_of_a_deal_has_its_own_id() -> None:
    first = await one_event(request(crm("crm_deal_updated")))
    second = await one_event(request(crm("crm_deal_updated", updated_at="2020-04-10T08:00:00.000-03:00")))
    again = await one_event(request(crm("crm_deal_updated")))
    assert first.id != second.id
    assert again.id == first.id


async def test_a_crm_event_without_updated_at_is_identified_by_its_body() -> None:
    body = encode(crm("crm_deal_updated", updated_at=None))
    event = await one_event(request(body))
    assert event.id == "rdstation-" + hashlib.sha256(body).hexdigest()


async def test_an_integer_deal_id_becomes_a_string_subject() -> None:
    assert (await one_event(request(crm(id=123456)))).subject == "123456"


async def test_another_crm_event_name_is_accepted_generically() -> None:
    event = await one_event(request(crm("crm_organization_created")))
    assert event.type == "rdstation.crm.organization_created"


# --- refusals ---------------------------------------------------------------------------------------------------


async def test_malformed_json_is_refused() -> None:
    result = await refused(request(b'{"leads": [}'), 400, "body")
    assert "not valid JSON" in result.reason


async def test_invalid_utf8_is_refused() -> None:
    await refused(request(b'{"leads": ["\xff"]}'), 400, "body")


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"])
async def test_a_body_that_is_not_json_by_its_content_type_is_refused(content_type: str) -> None:
    result = await refused(request(CONVERTED, content_type=content_type), 400, "body")
    assert "RD Station sends application/json" in result.reason


async def test_a_json_body_with_charset_or_no_content_type_is_accepted() -> None:
    await one_event(request(CONVERTED, content_type="application/json; charset=utf-8"))
    await one_event(request(CONVERTED, content_type=None))


@pytest.mark.parametrize("body", [[CONVERTED], "leads", 42, None])
async def test_a_body_that_is_not_an_object_is_refused(body: object) -> None:
    result = await refused(request(json.dumps(body).encode()), 400, "body")
    assert "JSON object" in result.reason


async def test_an_unknown_shape_is_refused_naming_the_known_ones() -> None:
    result = await refused(request({"contact": {"uuid": UUID}}), 400, "body")
    assert '{"leads": [...]}' in result.reason
    assert "WEBHOOK.CONVERTED" in result.reason
    assert "crm_deal_updated" in result.reason


async def test_an_ambiguous_shape_is_refused() -> None:
    result = await refused(request({**CONVERTED, "leads": [lead()]}), 400, "body")
    assert "several" in result.reason


@pytest.mark.parametrize("leads", [[], {}, "lead", None, 3])
async def test_empty_or_non_list_leads_are_refused(leads: object) -> None:
    await refused(request({"leads": leads}), 400, "body.leads")


async def test_more_than_a_thousand_leads_are_refused() -> None:
    tiny = {"uuid": "u", "created_at": "2024-01-01T00:00:00Z"}
    result = await refused(request({"leads": [tiny] * 1001}), 400, "body.leads")
    assert "1001" in result.reason
    assert len((await accepted(request({"leads": [tiny] * 1000}))).events) == 1000


@pytest.mark.parametrize(
    ("leads", "field"),
    [
        ([1, "x"], "body.leads[0]"),
        ([{"uuid": "u"}, "x"], "body.leads[1]"),
        ([{"uuid": "u"}, None], "body.leads[1]"),
        ([{"uuid": "u", "first_conversion": "x"}], "body.leads[0].first_conversion"),
        ([{"uuid": "u", "last_conversion": ["x"]}], "body.leads[0].last_conversion"),
        ([{"uuid": "u", "last_conversion": {"content": "x"}}], "body.leads[0].last_conversion.content"),
        (
            [{"uuid": "u", "first_conversion": {"content": {"identificador": 5}}}],
            "body.leads[0].first_conversion.content.identificador",
        ),
        ([{"uuid": 5}], "body.leads[0].uuid"),
    ],
)
async def test_lead_fields_of_the_wrong_type_are_refused(leads: list[Any], field: str) -> None:
    result = await refused(request({"leads": leads}), 400, field)
    assert field in result.reason


@pytest.mark.parametrize("changes", [{"uuid": None, "id": None}, {"uuid": "", "id": ""}, {"uuid": " ", "id": True}])
async def test_a_lead_without_uuid_or_id_is_refused(changes: dict[str, Any]) -> None:
    await refused(request(legacy(lead(), lead(**changes))), 400, "body.leads[1].uuid")


@pytest.mark.parametrize(
    ("contact", "field"),
    [
        (None, "body.contact.uuid"),
        ({}, "body.contact.uuid"),
        ({"uuid": ""}, "body.contact.uuid"),
        ({"uuid": 7}, "body.contact.uuid"),
        ([], "body.contact"),
        ("c2f3d2b3", "body.contact"),
    ],
)
async def test_a_contact_event_without_the_contact_uuid_is_refused(contact: object, field: str) -> None:
    await refused(request(converted(contact=contact)), 400, field)


@pytest.mark.parametrize("stamp", [None, "", "2018-03-13 14:07:04", "2018-03-13T14:07:04", "yesterday", 1520960824])
async def test_a_bad_event_timestamp_is_refused(stamp: object) -> None:
    result = await refused(request(converted(event_timestamp=stamp)), 400, "body.event_timestamp")
    assert "RFC 3339" in result.reason


@pytest.mark.parametrize("event_type", ["WEBHOOK.UNKNOWN", "webhook.converted", "CONVERSION", "", None, 1])
async def test_an_unknown_contact_event_type_is_refused_naming_the_known_ones(event_type: object) -> None:
    result = await refused(request(converted(event_type=event_type)), 400, "body.event_type")
    assert "WEBHOOK.CONVERTED, WEBHOOK.MARKED_OPPORTUNITY" in result.reason


async def test_a_non_string_event_identifier_is_refused() -> None:
    await refused(request(converted(event_identifier=["a"])), 400, "body.event_identifier")


@pytest.mark.parametrize("event_name", ["deal_created", "crm_", "crm_Deal_Created", "crm_deal.created", None, 3])
async def test_an_unknown_crm_event_name_is_refused(event_name: object) -> None:
    await refused(request({**crm(), "event_name": event_name}), 400, "body.event_name")


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (None, "body.document.id"),
        ({}, "body.document.id"),
        ({"id": ""}, "body.document.id"),
        ({"id": True}, "body.document.id"),
        ({"id": {"$oid": "x"}}, "body.document.id"),
        ([{"id": "x"}], "body.document"),
    ],
)
async def test_a_crm_event_without_the_deal_id_is_refused(document: object, field: str) -> None:
    await refused(request({"event_name": "crm_deal_updated", "document": document}), 400, field)


async def test_an_id_the_event_model_refuses_is_a_400_not_a_crash() -> None:
    result = await refused(request(converted(contact={"uuid": "bad\nuuid"})), 400, "body")
    assert "subject" in result.reason


async def test_a_lead_over_the_event_size_limit_is_refused_413() -> None:
    big = lead(bio="x" * (1024 * 1024))
    await refused(request(legacy(big)), 413, "body")


# --- containment ------------------------------------------------------------------------------------------------


class _Plugin:
    """Registers only the connector: the package's `__init__` also wants the destination module."""

    @hookimpl
    def eventbus_register_connectors(self, registry: ConnectorRegistry) -> None:
        registry.add(RDStationConnector())


async def test_junk_never_makes_the_connector_fail() -> None:
    plugins: Plugins = load_plugins(extra=[_Plugin()], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    connector = plugins.connectors().get("rdstation")
    assert connector is not None
    junk: list[bytes] = [
        b"",
        b"[" * 100_000,
        b'{"leads": [{"uuid": "u", "last_conversion": {"created_at": 5, "content": {}}}]}',
        b'{"leads": [{"uuid": "\\ud800"}]}',
        b'{"event_type": "WEBHOOK.CONVERTED", "contact": {"uuid": "u"}, "event_timestamp": "2018-02-30T00:00:00Z"}',
        b'{"event_type": "WEBHOOK.CONVERTED", "contact": {"uuid": "u"}, "event_timestamp": "9999-12-31T23:59:59-23:59"'
        b', "event_identifier": null}',
        b'{"event_name": "crm_deal_created", "document": {"id": "\\u0000"}}',
        b'{"leads": [{"uuid": "u", "number_conversions": "99999999999999999999999"}]}',
    ]
    for body in junk:
        result = await plugins.call_connector(connector, request(body), SOURCE, NOW)
        assert isinstance(result, Accepted | Refused), (body[:80], result)
    assert plugins.failures == {}

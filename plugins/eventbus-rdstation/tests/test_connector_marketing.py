"""The rdstation connector, Marketing: legacy API 1.x lead bodies and API 2.0 contact events, and their ids."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from connector_rig import BRT, NOW, UUID, accepted, digest, one_event, request
from fixtures_inbound import CONVERTED, converted, encode, lead, legacy

from eventbus.model import Event


def canonical(event: Event) -> str:
    """The normalised lead an event carries (without the added `conversion_identifier`), as its id digests it."""
    data = {key: value for key, value in event.json_data().items() if key != "conversion_identifier"}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- Marketing API 1.x (legacy) ------------------------------------------------------------------------------


async def test_a_legacy_body_with_three_leads_makes_three_events() -> None:
    first_only = lead(uuid="2b1e0f55-0000-4000-8000-000000000002", last_conversion=None)
    no_conversion = lead(
        uuid="2b1e0f55-0000-4000-8000-000000000003",
        first_conversion=None,
        last_conversion=None,
        created_at="2024-02-01T10:00:00-03:00",
    )
    body = encode(legacy(lead(), first_only, no_conversion))
    result = await accepted(request(body))

    assert result.dedup_key == hashlib.sha256(body).hexdigest()
    assert [e.type for e in result.events] == ["rdstation.lead.converted"] * 3
    assert [e.subject for e in result.events] == [
        UUID,
        "2b1e0f55-0000-4000-8000-000000000002",
        "2b1e0f55-0000-4000-8000-000000000003",
    ]
    assert [e.json_data()["conversion_identifier"] for e in result.events] == ["webinar-abc", "ebook-abc", None]
    leads = [canonical(e) for e in result.events]
    assert [e.id for e in result.events] == [
        digest(UUID, "webinar-abc", "2012-06-04T15:31:35-03:00", leads[0]),
        digest("2b1e0f55-0000-4000-8000-000000000002", "ebook-abc", "2012-06-04T15:31:35-03:00", leads[1]),
        digest("2b1e0f55-0000-4000-8000-000000000003", "", "2024-02-01T10:00:00-03:00", leads[2]),
    ]
    assert [e.time for e in result.events] == [
        datetime(2012, 6, 4, 15, 31, 35, tzinfo=BRT),
        datetime(2012, 6, 4, 15, 31, 35, tzinfo=BRT),
        datetime(2024, 2, 1, 10, 0, tzinfo=BRT),
    ]
    for event in result.events:
        assert event.source == "/hooks/rd-leads"
        assert event.datacontenttype == "application/json"


async def test_legacy_string_booleans_and_numbers_are_normalised() -> None:
    body = legacy(
        lead(),
        lead(uuid="u-2", opportunity="true", number_conversions="12", interest="1.5"),
    )
    first, second = [e.json_data() for e in (await accepted(request(body))).events]

    assert (first["opportunity"], first["number_conversions"], first["interest"]) == (False, 3, 0)
    assert first["first_conversion"]["cumulative_sum"] == 1
    assert first["last_conversion"]["cumulative_sum"] == 2
    assert (second["opportunity"], second["number_conversions"], second["interest"]) == (True, 12, 1.5)


async def test_legacy_phones_ids_and_other_strings_are_untouched() -> None:
    body = legacy(lead(id="1", custom_fields={"cf_plano": "3", "cf_ativo": "true"}, state="SC"))
    data = (await one_event(request(body))).json_data()

    assert (data["id"], data["uuid"]) == ("1", UUID)
    assert (data["personal_phone"], data["mobile_phone"]) == ("48 999999999", "48 999999999")
    assert data["first_conversion"]["content"]["telefone"] == "99999999"
    assert data["custom_fields"] == {"cf_plano": "3", "cf_ativo": "true"}
    assert (data["fit_score"], data["lead_stage"], data["state"]) == ("d", "Lead", "SC")
    assert data["first_conversion"]["conversion_origin"]["value"] == "value 1"


@pytest.mark.parametrize("value", ["3 ", " 3", "03", "1e3", "3,5", "+3", "", "0x1F", "1.", ".5", "NaN", "9" * 40])
async def test_only_plain_decimal_strings_become_numbers(value: str) -> None:
    data = (await one_event(request(legacy(lead(number_conversions=value))))).json_data()
    assert data["number_conversions"] == value


@pytest.mark.parametrize("value", ["True", "FALSE", "yes", "1", "0", ""])
async def test_only_true_and_false_become_booleans(value: str) -> None:
    data = (await one_event(request(legacy(lead(opportunity=value))))).json_data()
    assert data["opportunity"] == value


async def test_values_already_typed_are_kept() -> None:
    data = (await one_event(request(legacy(lead(opportunity=True, number_conversions=4, interest=None))))).json_data()
    assert (data["opportunity"], data["number_conversions"], data["interest"]) == (True, 4, None)


async def test_a_legacy_opportunity_is_still_converted_and_says_so_in_its_data() -> None:
    event = await one_event(request(legacy(lead(opportunity="true"))))
    assert event.type == "rdstation.lead.converted"
    assert event.json_data()["opportunity"] is True


async def test_the_legacy_lead_keeps_its_fields_and_gains_the_conversion_identifier() -> None:
    original = lead()
    data = (await one_event(request(legacy(original)))).json_data()
    assert set(data) == {*original, "conversion_identifier"}
    assert data["tags"] == ["tag 1", "tag 2"]
    assert data["last_conversion"]["content"] == {"identificador": "webinar-abc", "email_lead": "lead@example.com"}


async def test_a_lead_without_uuid_takes_its_id_as_subject() -> None:
    body = legacy(lead(uuid=None, id="1"), lead(uuid="", id=42))
    assert [e.subject for e in (await accepted(request(body))).events] == ["1", "42"]


async def test_a_lead_without_email_is_accepted() -> None:
    value = lead()
    del value["email"]
    assert (await one_event(request(legacy(value)))).subject == UUID


async def test_the_lead_time_falls_back_to_created_at_then_now() -> None:
    no_conversion_time = lead(last_conversion={"content": {"identificador": "x"}}, created_at="2020-01-02T03:04:05Z")
    unparsable = lead(uuid="u-2", last_conversion=None, created_at="04/06/2012 15:31")
    nothing = lead(uuid="u-3", last_conversion=None, created_at=None)
    times = [e.time for e in (await accepted(request(legacy(no_conversion_time, unparsable, nothing)))).events]
    assert times == [datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC), NOW, NOW]


async def test_a_lead_with_no_time_at_all_gets_the_body_digest_suffixed() -> None:
    body = encode(legacy(lead(last_conversion=None, created_at=None), lead(last_conversion=None, created_at=None)))
    ids = [e.id for e in (await accepted(request(body))).events]
    base = "rdstation-" + hashlib.sha256(body).hexdigest()
    assert ids == [f"{base}-0", f"{base}-1"]


async def test_a_redelivered_legacy_lead_keeps_its_id_in_another_body() -> None:
    alone = await accepted(request(legacy(lead())))
    together = await accepted(request(legacy(lead(uuid="someone-else"), lead())))
    assert together.events[1].id == alone.events[0].id
    assert together.dedup_key != alone.dedup_key


async def test_a_lead_resent_unchanged_is_the_same_event_whatever_its_key_order() -> None:
    original = lead()
    reordered = dict(reversed(list(original.items())))
    reordered["last_conversion"] = dict(reversed(list(original["last_conversion"].items())))
    first = await one_event(request(legacy(original)))
    again = await one_event(request(encode(legacy(reordered)).replace(b'": ', b'":')))
    assert again.id == first.id


async def test_a_lead_marked_as_opportunity_is_a_new_event_not_a_duplicate() -> None:
    # The "conversion" and "marked as opportunity" triggers (or an automation flow) send the same lead and the same
    # last conversion; only the lead's fields tell them apart, and a dedup on the conversion alone dropped the second.
    converted_lead = await one_event(request(legacy(lead())))
    opportunity = await one_event(request(legacy(lead(opportunity="true", lead_stage="Qualified Lead"))))
    assert opportunity.id != converted_lead.id
    assert (opportunity.subject, opportunity.type) == (converted_lead.subject, converted_lead.type)
    assert opportunity.json_data()["opportunity"] is True


@pytest.mark.parametrize(
    "change",
    [{"name": "Renamed Lead"}, {"tags": ["tag 1"]}, {"custom_fields": {"cf_plano": "pro"}}, {"interest": "5"}],
)
async def test_any_change_to_the_lead_makes_a_new_event(change: dict[str, object]) -> None:
    first = await one_event(request(legacy(lead())))
    changed = await one_event(request(legacy(lead(**change))))
    assert changed.id != first.id


async def test_string_and_typed_values_that_normalise_alike_are_the_same_lead() -> None:
    as_strings = await one_event(request(legacy(lead(opportunity="false", number_conversions="3"))))
    typed = await one_event(request(legacy(lead(opportunity=False, number_conversions=3))))
    assert typed.id == as_strings.id


async def test_a_new_conversion_of_the_same_lead_has_a_new_id() -> None:
    later = lead()
    later["last_conversion"]["created_at"] = "2012-07-01T09:00:00-03:00"
    first = await one_event(request(legacy(lead())))
    second = await one_event(request(legacy(later)))
    assert first.id != second.id
    assert first.subject == second.subject


# --- Marketing API 2.0 ------------------------------------------------------------------------------------------


async def test_a_converted_contact_becomes_one_event() -> None:
    body = encode(CONVERTED)
    result = await accepted(request(body))
    (event,) = result.events
    expected_id = digest("WEBHOOK.CONVERTED", UUID, "my-event-identifier", "2018-03-13T14:07:04.254-03:00")
    assert (event.type, event.subject, event.id) == ("rdstation.lead.converted", UUID, expected_id)
    assert result.dedup_key == expected_id
    assert event.time == datetime(2018, 3, 13, 14, 7, 4, 254000, tzinfo=BRT)
    assert event.data == body  # as received, byte for byte
    assert event.datacontenttype == "application/json"
    assert event.json_data() == CONVERTED


async def test_a_contact_marked_as_opportunity_becomes_one_event() -> None:
    body = converted(event_type="WEBHOOK.MARKED_OPPORTUNITY")
    event = await one_event(request(body))
    assert (event.type, event.subject) == ("rdstation.lead.opportunity", UUID)
    converted_event = await one_event(request(CONVERTED))
    assert event.id != converted_event.id  # the same contact, moment and identifier: two different facts


async def test_a_redelivery_with_another_send_time_has_the_same_id_and_dedup_key() -> None:
    first = await accepted(request(CONVERTED))
    again = await accepted(request(converted(timestamp="2018-03-13T15:30:00.000-03:00")))
    assert again.events[0].id == first.events[0].id
    assert again.dedup_key == first.dedup_key


async def test_another_conversion_of_the_same_contact_has_another_id() -> None:
    first = await one_event(request(CONVERTED))
    later = await one_event(request(converted(event_timestamp="2018-03-14T09:00:00.000-03:00")))
    other_form = await one_event(request(converted(event_identifier="newsletter")))
    assert len({first.id, later.id, other_form.id}) == 3


async def test_a_contact_event_without_an_identifier_is_accepted() -> None:
    body = converted()
    del body["event_identifier"]
    event = await one_event(request(body))
    assert event.id == digest("WEBHOOK.CONVERTED", UUID, "", "2018-03-13T14:07:04.254-03:00")

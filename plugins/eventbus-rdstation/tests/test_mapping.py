"""The mapping engine: every subscription-time rule (errors name the field path), and payloads built from events."""

from __future__ import annotations

import json
import math

import pytest
from conftest import CART, CONVERSION, NOW, delivery
from eventbus_rdstation.mapping import Mapping, MappingError

from eventbus.errors import InvalidArgumentError
from eventbus.model import Event


def build(mapping: dict[str, object], data: object = None, **attributes: object) -> dict[str, object] | MappingError:
    return Mapping.parse(mapping).build(delivery(data, **attributes).event.event)  # type: ignore[arg-type]


def conversion(**payload: object) -> dict[str, object]:
    return {"payload": {"conversion_identifier": "form", "email": "$.data.customer.email", **payload}}


@pytest.mark.parametrize(
    ("mapping", "field", "why"),
    [
        ("[1, 2]", "options.mapping", "an object"),
        ({"payload": {}, "extra": 1}, "options.mapping.extra", "unknown key"),
        ({"event_type": "sale", "payload": {"email": "x@y.z"}}, "options.mapping.event_type", "in capitals"),
        ({"event_type": "SALE"}, "options.mapping.payload", "required"),
        ({"payload": {"conversion_identifier": "form"}}, "options.mapping.payload.email", "required by RD"),
        ({"payload": {"email": "$.data.email"}}, "options.mapping.payload.conversion_identifier", "required by RD"),
        ({"event_type": "SALE", "payload": {"value": 1}}, "options.mapping.payload.email", "for SALE events"),
        ({"event_type": "OPPORTUNITY_LOST", "payload": {"reason": "x"}}, "options.mapping.payload.email", "required"),
        (conversion(emial="$.data.email"), "options.mapping.payload.emial", "not a CONVERSION field"),
        ({"event_type": "ORDER_PLACED", "payload": {"Total": 1}}, "options.mapping.payload.Total", "snake_case"),
        (conversion(name="$.customer.name"), "options.mapping.payload.name", "starts at `customer`"),
        (conversion(name="$.data..name"), "options.mapping.payload.name", "empty segment"),
        (conversion(name="$.subject.name"), "options.mapping.payload.name", "no sub-fields"),
        (conversion(name="$.ext.a.b"), "options.mapping.payload.name", "$.ext.<name>"),
        (conversion(name="$data.name"), "options.mapping.payload.name", "starts with `$.`"),
        (conversion(name=None), "options.mapping.payload.name", "null is not a value"),
        (conversion(name={"const": None}), "options.mapping.payload.name", "cannot be null"),
        (conversion(name={"const": "a", "path": "$.x"}), "options.mapping.payload.name", '{"const"'),
        (conversion(name=[{"a": 1}]), "options.mapping.payload.name[0]", '{"const"'),
        (conversion(tags="site"), "options.mapping.payload.tags", "a list of strings"),
        (conversion(tags={"const": [1]}), "options.mapping.payload.tags", "a list of strings"),
        (conversion(legal_bases={"const": [{"category": "x"}]}), "options.mapping.payload.legal_bases", "category"),
        (conversion(legal_bases=["$.data.basis"]), "options.mapping.payload.legal_bases", "a path or"),
        (
            {"payload": {"conversion_identifier": "f", "email": "a b@c"}},
            "options.mapping.payload.email",
            "not an email",
        ),
        ({**conversion(), "optional": ["email"]}, "options.mapping.optional[0]", "cannot be optional"),
        ({**conversion(), "optional": ["city"]}, "options.mapping.optional[0]", "not a field of mapping.payload"),
        ({**conversion(), "optional": "name"}, "options.mapping.optional", "a list"),
        (conversion(cf_x={"const": math.nan}), "options.mapping.payload.cf_x", "must be finite"),
        (conversion(cf_x=math.inf), "options.mapping.payload.cf_x", "must be finite"),
        (conversion(cf_x=["a", {"const": {"n": [-math.inf]}}]), "options.mapping.payload.cf_x[1]", "must be finite"),
        (json.dumps(conversion(cf_x={"const": math.nan})), "options.mapping.payload.cf_x", "must be finite"),
    ],
)
def test_invalid_mappings_name_the_field(mapping: object, field: str, why: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Mapping.parse(mapping)
    [violation] = caught.value.violations
    assert violation.field == field
    assert why in violation.detail


def test_defaults_and_normalised_form_round_trip() -> None:
    mapping = Mapping.parse(
        {"payload": {"conversion_identifier": "$$promo", "email": "$.data.customer.email", "tags": ["a", "b"]}}
    )
    assert mapping.event_type == "CONVERSION"
    assert mapping.options() == {
        "event_type": "CONVERSION",
        "payload": {
            "conversion_identifier": "$$promo",
            "email": "$.data.customer.email",
            "tags": {"const": ["a", "b"]},
        },
    }
    assert Mapping.parse(mapping.options()) == mapping
    assert Mapping.parse(json.dumps(mapping.options())) == mapping  # `--option mapping=<JSON>` from the CLI


@pytest.mark.parametrize("event_type", ["SALE", "OPPORTUNITY", "OPPORTUNITY_LOST"])
def test_funnel_types_get_the_default_funnel(event_type: str) -> None:
    mapping = Mapping.parse({"event_type": event_type, "payload": {"email": "$.data.customer.email"}})
    assert mapping.options()["payload"] == {"email": "$.data.customer.email", "funnel_name": "default"}
    assert "funnel_name" not in Mapping.parse(conversion()).options()["payload"]  # type: ignore[operator]


def test_rd_validates_the_rest() -> None:
    # Custom fields for conversions; any snake_case field and any capitalised type elsewhere (RD has the last word).
    assert Mapping.parse(conversion(cf_plano="pro", cf_Origem="$.source")).fields
    loose = Mapping.parse({"event_type": "CHAT_STARTED", "payload": {"chat_channel": "whatsapp", "value": 1.5}})
    assert loose.required == ()


def test_paths_reach_attributes_data_list_items_and_extensions() -> None:
    mapping = conversion(
        name="$.data.customer.name",
        cf_sku="$.data.items.1.sku",
        cf_subject="$.subject",
        cf_id="$.id",
        cf_type="$.type",
        cf_source="$.source",
        cf_time="$.time",
        cf_region="$.ext.region",
        cf_literal="$$.data.not-a-path",
        cf_const={"const": {"nested": [1, 2]}},
        available_for_mailing=True,
        traffic_value=3,
        tags=["loja", "$.data.channel", "$.data.missing"],
    )
    data = {**CART, "items": [{"sku": "A"}, {"sku": "B"}]}
    payload = build(mapping, data, extensions={"region": "sul"})
    assert payload == {
        "conversion_identifier": "form",
        "email": "lead@example.com",
        "name": "Lead",
        "cf_sku": "B",
        "cf_subject": "cart-42",
        "cf_id": "order-1",
        "cf_type": "cart.abandoned",
        "cf_source": "/shop",
        "cf_time": "2026-05-01T12:00:00.000000Z",
        "cf_region": "sul",
        "cf_literal": "$.data.not-a-path",
        "cf_const": {"nested": [1, 2]},
        "available_for_mailing": True,
        "traffic_value": 3,
        "tags": ["loja", "site"],
    }


def test_absent_optional_fields_are_left_out() -> None:
    payload = build(CONVERSION, {"customer": {"email": "lead@example.com"}, "channel": "site"})
    assert payload == {
        "conversion_identifier": "carrinho-abandonado",
        "email": "lead@example.com",
        "tags": ["loja", "site"],
    }


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({"customer": {}}, "email", "is absent in the event, and RD requires it for CONVERSION"),
        ({"customer": {"email": None}}, "email", "is absent"),
        ({"customer": {"email": ""}}, "email", "is empty"),
        ({"customer": {"email": "two@at@signs"}}, "email", "'two@at@signs' is not an email address"),
        ({"customer": {"email": 42}}, "email", "42 is not an email address"),
        ({"customer": {"email": "lead@example.com"}, "items": []}, "cf_sku", "list it in mapping.optional"),
    ],
)
def test_events_that_cannot_map(data: object, field: str, problem: str) -> None:
    error = build(conversion(cf_sku="$.data.items.0.sku"), data)
    assert isinstance(error, MappingError)
    assert error.field == field
    assert problem in error.reason
    assert error.path == ("$.data.customer.email" if field == "email" else "$.data.items.0.sku")
    assert f"payload field {field} (from {error.path})" in error.reason


def test_data_that_is_not_json_has_no_fields() -> None:
    event = Event.create(type="blob.stored", source="/s", id="1", data=b"\x00\x01")
    error = Mapping.parse(conversion()).build(event)
    assert isinstance(error, MappingError)
    assert error.field == "email"
    text = Event.create(type="note.added", source="/s", id="2", data="hello@example.com")
    assert Mapping.parse({"payload": {"conversion_identifier": "n", "email": "$.data"}}).build(text) == {
        "conversion_identifier": "n",
        "email": "hello@example.com",
    }


def test_a_path_string_tag_becomes_a_list() -> None:
    payload = build(conversion(tags="$.data.channel"), None)
    assert isinstance(payload, dict)
    assert payload["tags"] == ["site"]
    assert NOW.year == 2026


def test_a_nan_constant_from_json_text_is_refused_not_sent() -> None:
    # json.loads reads NaN; json.dumps would write it back, and RD would get a body that is not JSON.
    text = '{"payload": {"conversion_identifier": "f", "email": "$.data.customer.email", "traffic_value": NaN}}'
    with pytest.raises(InvalidArgumentError) as caught:
        Mapping.parse(text)
    assert caught.value.violations[0].field == "options.mapping.payload.traffic_value"


@pytest.mark.parametrize("step", ["²", "٣", "１"])  # superscript two, Arabic-Indic three, fullwidth one
def test_a_non_ascii_digit_step_is_a_key_not_an_index(step: str) -> None:
    mapping = {**conversion(cf_item=f"$.data.items.{step}"), "optional": ["cf_item"]}
    listed = build(mapping, {**CART, "items": ["a", "b", "c", "d"]})
    assert isinstance(listed, dict) and "cf_item" not in listed  # absent in a list, never a crash
    keyed = build(mapping, {**CART, "items": {step: "by key"}})
    assert isinstance(keyed, dict) and keyed["cf_item"] == "by key"
    required = build(conversion(cf_item=f"$.data.items.{step}"), {**CART, "items": ["a", "b", "c", "d"]})
    assert isinstance(required, MappingError) and "is absent" in required.reason


def test_ascii_digit_steps_index_lists_and_key_objects() -> None:
    mapping = conversion(cf_first="$.data.items.0", cf_big="$.data.items.99999999999999999999")
    assert build({**mapping, "optional": ["cf_big"]}, {**CART, "items": ["a"]}) == {
        "conversion_identifier": "form",
        "email": "lead@example.com",
        "cf_first": "a",
    }
    assert build(mapping, {**CART, "items": {"0": "zero", "99999999999999999999": "big"}}) == {
        "conversion_identifier": "form",
        "email": "lead@example.com",
        "cf_first": "zero",
        "cf_big": "big",
    }


def test_a_list_valued_path_in_a_list_adds_its_items() -> None:
    mapping = conversion(tags=["loja", "$.data.tags", "$.data.channel", "$.data.missing"])
    payload = build(mapping, {**CART, "tags": ["t1", None, "t2"]})
    assert isinstance(payload, dict) and payload["tags"] == ["loja", "t1", "t2", "site"]
    nested = build(mapping, {**CART, "tags": [["deep"], "t3"]})  # one level only
    assert isinstance(nested, dict) and nested["tags"] == ["loja", ["deep"], "t3", "site"]
    empty = build(mapping, {**CART, "tags": []})
    assert isinstance(empty, dict) and empty["tags"] == ["loja", "site"]
    constant = build(conversion(cf_list=[{"const": ["a", "b"]}, "$.data.channel"]), CART)
    assert isinstance(constant, dict) and constant["cf_list"] == [["a", "b"], "site"]  # a constant stays whole

"""Content filters: every operator, absent paths, no coercion, nesting, array indexing and parse errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType

import pytest

from eventbus.errors import InvalidArgumentError
from eventbus.filters import ContentFilter


def event(**overrides: object) -> dict[str, object]:
    """An event document as callers build it; `data` and friends can be overridden or dropped with None."""
    document: dict[str, object] = {
        "id": "evt-1",
        "source": "shop/checkout",
        "type": "order.paid",
        "specversion": "1.0",
        "subject": "vip-42",
        "time": "2024-05-17T12:00:00Z",
        "datacontenttype": "application/json",
        "dataschema": "https://schemas.example/order.json",
        "ext": {"tenant": "acme", "priority": 3},
        "data": {
            "amount": 15000,
            "currency": "BRL",
            "customer": {"email": "ana@example.com", "tags": ["vip", "early"]},
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1.5}],
            "note": None,
            "paid": True,
        },
    }
    for key, value in overrides.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    return document


def compile_filter(value: str | Mapping[str, object]) -> ContentFilter:
    compiled = ContentFilter.parse(value)
    assert compiled is not None
    return compiled


def matches(filter_: Mapping[str, object], document: Mapping[str, object] | None = None) -> bool:
    return compile_filter(filter_).matches(event() if document is None else document)


def parse_error(value: str | Mapping[str, object], field: str = "filter") -> tuple[str, str]:
    with pytest.raises(InvalidArgumentError) as error:
        ContentFilter.parse(value, field)
    (violation,) = error.value.violations
    assert error.value.message == f"{violation.field}: {violation.detail}"
    return violation.field, violation.detail


# --- the contract's example and the empty cases ------------------------------------------------------------------


def test_contract_example() -> None:
    text = '{"data.amount": {"$gte": 10000}, "data.currency": "BRL", "$or": [{"subject": {"$prefix": "vip-"}}]}'
    compiled = compile_filter(text)
    assert compiled.matches(event())
    assert not compiled.matches(event(subject="regular-1"))
    assert not compiled.matches(event(data={"amount": 9999, "currency": "BRL"}))
    assert not compiled.matches(event(data={"amount": 15000, "currency": "USD"}))
    assert not compiled.matches(event(data=None))


@pytest.mark.parametrize("value", [None, "", "   ", "{}", "null", {}])
def test_no_filter(value: str | Mapping[str, object] | None) -> None:
    assert ContentFilter.parse(value) is None


# --- equality ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"data.currency": "BRL"}, True),
        ({"data.currency": "brl"}, False),
        ({"data.amount": 15000}, True),
        ({"data.amount": 15000.0}, True),
        ({"data.amount": "15000"}, False),
        ({"data.paid": True}, True),
        ({"data.paid": 1}, False),
        ({"ext.priority": 3}, True),
        ({"ext.priority": True}, False),
        ({"data.note": None}, True),
        ({"data.missing": None}, False),
        ({"data.customer.tags": ["vip", "early"]}, True),
        ({"data.customer.tags": ["early", "vip"]}, False),
        ({"data.customer": {"$eq": {"tags": ["vip", "early"], "email": "ana@example.com"}}}, True),
        ({"data.customer": {"$eq": {"tags": ["vip", "early"]}}}, False),
        ({"data.items": {"$eq": [{"sku": "A-1", "qty": 2.0}, {"sku": "B-7", "qty": 1.5}]}}, True),
        ({"data.items": {"$eq": [{"sku": "A-1", "qty": True}, {"sku": "B-7", "qty": 1.5}]}}, False),
        ({"data.amount": {"$eq": 15000}}, True),
        ({"data.amount": {"$eq": [15000]}}, False),
        ({"data.currency": {"$eq": "BRL"}}, True),
        ({"subject": "vip-42", "source": "shop/checkout", "type": "order.paid", "id": "evt-1"}, True),
        ({"time": "2024-05-17T12:00:00Z", "datacontenttype": "application/json"}, True),
        ({"dataschema": "https://schemas.example/order.json", "ext.tenant": "acme"}, True),
        ({"data": {"$eq": "plain text"}}, False),
    ],
)
def test_equality_is_deep_json_equality(filter_: Mapping[str, object], expected: bool) -> None:
    assert matches(filter_) is expected


def test_deep_equality_does_not_confuse_true_with_one() -> None:
    assert matches({"data": {"$eq": [1, True]}}, event(data=[1.0, True]))
    assert not matches({"data": {"$eq": [1, True]}}, event(data=[True, 1]))
    assert not matches({"data": {"$eq": {"a": 1}}}, event(data={"a": 1, "b": 2}))


def test_data_root_may_be_a_scalar() -> None:
    assert matches({"data": "hello"}, event(data="hello"))
    assert matches({"data": {"$gt": 3}}, event(data=4))


# --- $ne, orderings ------------------------------------------------------------------------------------------------


def test_ne() -> None:
    assert matches({"data.currency": {"$ne": "USD"}})
    assert not matches({"data.currency": {"$ne": "BRL"}})
    assert matches({"data.amount": {"$ne": "15000"}})  # a string is never equal to a number
    assert not matches({"data.amount": {"$ne": 15000.0}})
    assert matches({"data.paid": {"$ne": 1}})


@pytest.mark.parametrize(
    ("operator", "bound", "expected"),
    [
        ("$gt", 14999, True),
        ("$gt", 15000, False),
        ("$gte", 15000, True),
        ("$gte", 15000.5, False),
        ("$lt", 15000.5, True),
        ("$lt", 15000, False),
        ("$lte", 15000, True),
        ("$lte", 14999.99, False),
    ],
)
def test_numeric_orderings(operator: str, bound: float, expected: bool) -> None:
    assert matches({"data.amount": {operator: bound}}) is expected


def test_string_orderings() -> None:
    assert matches({"time": {"$gte": "2024-05-17T00:00:00Z", "$lt": "2024-05-18T00:00:00Z"}})
    assert not matches({"time": {"$gt": "2024-05-17T12:00:00Z"}})
    assert matches({"data.currency": {"$lt": "BRM", "$gt": "BRA"}})


def test_orderings_never_coerce() -> None:
    assert not matches({"data.amount": {"$gt": "1"}})  # number value, string bound
    assert not matches({"data.amount": {"$lt": "999999"}})
    assert not matches({"data.currency": {"$gt": 0}})  # string value, number bound
    assert not matches({"data.paid": {"$gte": 0}})  # bool is not a number
    assert not matches({"data.paid": {"$lte": 1}})
    assert not matches({"data.note": {"$lt": 1}})
    assert not matches({"data.items": {"$gt": 0}})


def test_float_and_int_mix() -> None:
    assert matches({"data.items.1.qty": {"$gt": 1, "$lt": 2}})
    assert matches({"data.items.0.qty": {"$gte": 2.0, "$lte": 2}})


# --- $in, $nin --------------------------------------------------------------------------------------------------


def test_in_and_nin() -> None:
    assert matches({"data.currency": {"$in": ["USD", "BRL"]}})
    assert not matches({"data.currency": {"$in": ["USD", "EUR"]}})
    assert not matches({"data.currency": {"$in": []}})
    assert matches({"data.currency": {"$nin": ["USD", "EUR"]}})
    assert matches({"data.currency": {"$nin": []}})
    assert not matches({"data.currency": {"$nin": ["BRL"]}})


def test_in_uses_json_equality() -> None:
    assert matches({"data.amount": {"$in": [15000.0]}})
    assert not matches({"data.amount": {"$in": ["15000"]}})
    assert not matches({"data.paid": {"$in": [1]}})
    assert matches({"data.paid": {"$in": [1, True]}})
    assert matches({"ext.priority": {"$in": [True, 3]}})
    assert not matches({"ext.priority": {"$in": [True, False, "3"]}})
    assert matches({"data.note": {"$in": [None]}})
    assert matches({"data.customer.tags": {"$in": [["vip"], ["vip", "early"]]}})
    assert not matches({"data.customer.tags": {"$in": ["vip"]}})  # no implicit array traversal
    assert matches({"data.items.0": {"$in": [{"qty": 2.0, "sku": "A-1"}]}})
    assert matches({"data.paid": {"$nin": [1, "true"]}})
    assert not matches({"data.customer.tags": {"$nin": [["vip", "early"]]}})


# --- absent paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        "x",
        None,
        {"$eq": None},
        {"$ne": "x"},
        {"$gt": 0},
        {"$gte": ""},
        {"$lt": 0},
        {"$lte": "z"},
        {"$in": [None, "x"]},
        {"$nin": ["x"]},
        {"$nin": []},
        {"$exists": True},
        {"$prefix": ""},
        {"$regex": ""},
    ],
)
def test_absent_path_fails_every_operator_but_exists_false(condition: object) -> None:
    for path in ("data.missing", "data.amount.deeper", "data.items.5.sku", "data.customer.tags.x", "ext.nope"):
        assert not matches({path: condition}), path
    assert not matches({"data.amount": condition}, event(data=None))
    assert not matches({"subject": condition}, event(subject=None))


def test_exists() -> None:
    assert matches({"data.missing": {"$exists": False}})
    assert matches({"subject": {"$exists": False}}, event(subject=None))
    assert matches({"data": {"$exists": False}}, event(data=None))
    assert not matches({"data.amount": {"$exists": False}})
    assert matches({"data.amount": {"$exists": True}})
    assert matches({"data.note": {"$exists": True}})  # present with a null value is present
    assert not matches({"data.note": {"$exists": False}})


def test_exists_false_combined_with_other_operators_on_an_absent_path() -> None:
    # Several operators AND together; absent fails every one but `$exists: false`.
    assert not matches({"data.missing": {"$exists": False, "$ne": 1}})
    assert matches({"data.missing": {"$exists": False}, "data.amount": 15000})


# --- $prefix, $regex ---------------------------------------------------------------------------------------------


def test_prefix() -> None:
    assert matches({"subject": {"$prefix": "vip-"}})
    assert not matches({"subject": {"$prefix": "VIP-"}})
    assert matches({"data.customer.email": {"$prefix": ""}})
    assert not matches({"data.amount": {"$prefix": "15"}})  # only strings


def test_regex() -> None:
    assert matches({"data.customer.email": {"$regex": r"@example\.com$"}})
    assert matches({"source": {"$regex": "check"}})  # search, not match
    assert not matches({"source": {"$regex": "^check"}})
    assert matches({"subject": {"$regex": "(?i)^VIP-"}})
    assert not matches({"data.amount": {"$regex": "15"}})  # only strings
    assert not matches({"data.paid": {"$regex": "True"}})


# --- paths and array indexing ------------------------------------------------------------------------------------


def test_array_indexing() -> None:
    assert matches({"data.items.0.sku": "A-1"})
    assert matches({"data.items.1.sku": {"$in": ["B-7"]}})
    assert not matches({"data.items.2.sku": {"$exists": True}})
    assert matches({"data.items.2": {"$exists": False}})
    assert matches({"data.customer.tags.0": "vip", "data.customer.tags.1": "early"})
    assert matches({"data.0.1": 5}, event(data=[[4, 5]]))


def test_numeric_segment_is_a_key_for_objects_and_words_never_index_arrays() -> None:
    assert matches({"data.codes.7": "x"}, event(data={"codes": {"7": "x"}}))
    assert not matches({"data.items.first": {"$exists": True}})
    assert not matches({"data.items.-1": {"$exists": True}})


def test_ext_paths() -> None:
    assert matches({"ext.tenant": "acme", "ext.priority": {"$gte": 3}})
    assert not matches({"ext.tenant": "acme"}, event(ext={}))
    assert not matches({"ext.tenant": "acme"}, event(ext=None))


def test_document_may_be_any_mapping() -> None:
    document = MappingProxyType({"type": "order.paid", "ext": MappingProxyType({"tenant": "acme"})})
    assert matches({"type": "order.paid", "ext.tenant": "acme"}, document)


# --- $and, $or, $not -----------------------------------------------------------------------------------------------


def test_logical_operators() -> None:
    assert matches({"$and": [{"data.amount": {"$gt": 1}}, {"data.currency": "BRL"}]})
    assert not matches({"$and": [{"data.amount": {"$gt": 1}}, {"data.currency": "USD"}]})
    assert matches({"$or": [{"data.currency": "USD"}, {"data.currency": "BRL"}]})
    assert not matches({"$or": [{"data.currency": "USD"}, {"data.currency": "EUR"}]})
    assert matches({"$not": {"data.currency": "USD"}})
    assert not matches({"$not": {"data.currency": "BRL"}})
    assert matches({"$or": [{}]})
    assert not matches({"$not": {}})


def test_not_of_an_absent_path_is_true() -> None:
    assert matches({"$not": {"data.missing": {"$ne": 1}}})
    assert matches({"$not": {"data.missing": 1}})


def test_nesting() -> None:
    filter_ = {
        "type": {"$prefix": "order."},
        "$or": [
            {"$and": [{"data.amount": {"$gte": 10000}}, {"$not": {"data.currency": {"$in": ["USD", "EUR"]}}}]},
            {"ext.priority": {"$gt": 5}},
        ],
        "$not": {"$or": [{"subject": {"$regex": "^test-"}}, {"data.customer.email": {"$prefix": "qa@"}}]},
    }
    compiled = compile_filter(filter_)
    assert compiled.matches(event())
    assert not compiled.matches(event(subject="test-1"))
    assert not compiled.matches(event(data={"amount": 20000, "currency": "USD"}))
    assert compiled.matches(event(data={"amount": 1, "currency": "USD"}, ext={"priority": 9}))
    assert not compiled.matches(event(type="invoice.paid"))


# --- canonical JSON and needs_data ---------------------------------------------------------------------------


def test_source_json_is_canonical() -> None:
    first = compile_filter('{"subject": "a", "data.x": {"$lt": 5, "$gt": 1}}')
    second = compile_filter({"data.x": {"$gt": 1, "$lt": 5}, "subject": "a"})
    assert first.source_json == second.source_json == '{"data.x":{"$gt":1,"$lt":5},"subject":"a"}'
    assert first == second
    assert hash(first) == hash(second)
    assert json.loads(first.source_json) == {"data.x": {"$gt": 1, "$lt": 5}, "subject": "a"}
    assert first != compile_filter({"subject": "b", "data.x": {"$gt": 1, "$lt": 5}})


def test_source_json_round_trips() -> None:
    original = compile_filter({"$or": [{"data.é": "ü"}, {"ext.t": {"$in": [1, 2.5, None]}}]})
    again = compile_filter(original.source_json)
    assert again == original
    assert original.matches(event(data={"é": "ü"}))


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"subject": "a"}, False),
        ({"ext.tenant": "a", "type": "x", "time": {"$exists": True}}, False),
        ({"data.amount": 1}, True),
        ({"data": {"$exists": True}}, True),
        ({"subject": "a", "$or": [{"type": "b"}, {"data.x": 1}]}, True),
        ({"$not": {"$and": [{"data.items.0": 1}]}}, True),
        ({"$not": {"subject": "a"}}, False),
    ],
)
def test_needs_data(filter_: Mapping[str, object], expected: bool) -> None:
    assert compile_filter(filter_).needs_data is expected


def test_filters_without_data_work_on_documents_without_data() -> None:
    compiled = compile_filter({"subject": {"$prefix": "vip-"}})
    assert not compiled.needs_data
    assert compiled.matches(event(data=None))


def test_mapping_input_is_normalised() -> None:
    compiled = compile_filter(MappingProxyType({"data.x": {"$in": (1, 2)}}))
    assert compiled.source_json == '{"data.x":{"$in":[1,2]}}'
    assert compiled.matches(event(data={"x": 2}))


# --- parse errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field", "expected"),
    [
        ("{not json", "filter", "not valid JSON: "),
        ('{"a": 1', "filter", "not valid JSON: "),
        ('{"subject": "a", "subject": "b"}', "filter", "not valid JSON: duplicate key 'subject'"),
        ('{"data.x": NaN}', "filter", "not valid JSON: NaN is not a JSON number"),
        ('{"data.x": 1e400}', "filter", "not JSON-serialisable: Out of range float values"),
        ("[1, 2]", "filter", "must be a JSON object, got array"),
        ('"subject"', "filter", "must be a JSON object, got string"),
        ("7", "filter", "must be a JSON object, got number"),
        ({"data.x": float("nan")}, "filter", "not JSON-serialisable"),
        ({"data.x": {1, 2}}, "filter", "not JSON-serialisable"),
        ({"$foo": 1}, "filter.$foo", "unknown operator `$foo`; a filter object's keys are paths or $and, $or, $not"),
        ({"$gt": 1}, "filter.$gt", '`$gt` tests the value at a path: write {"<path>": {"$gt": ...}}'),
        ({"$and": []}, "filter.$and", "`$and` takes a non-empty array of filter objects, got array"),
        ({"$or": {"a": 1}}, "filter.$or", "`$or` takes a non-empty array of filter objects, got object"),
        (
            {"$and": [{"subject": "a"}, "b"]},
            "filter.$and[1]",
            "each item of `$and` must be a filter object, got string",
        ),
        ({"$not": [{"subject": "a"}]}, "filter.$not", "`$not` takes one filter object, got array"),
        ({"$not": "x"}, "filter.$not", "`$not` takes one filter object, got string"),
        ({"": 1}, "filter", "empty path (a key is the empty string)"),
        ({"data..x": 1}, "filter.data..x", "path `data..x` has an empty segment at position 2"),
        ({"data.": 1}, "filter.data.", "has an empty segment at position 2"),
        ({".data": 1}, "filter..data", "has an empty segment at position 1"),
        ({"payload.x": 1}, "filter.payload.x", "unknown root `payload` in path `payload.x`; a path starts with one of"),
        ({"specversion": "1.0"}, "filter.specversion", "unknown root `specversion`"),
        ({"ext": {"$exists": True}}, "filter.ext", "extension paths name exactly one extension, as in `ext.<name>`"),
        ({"ext.a.b": 1}, "filter.ext.a.b", "extension paths name exactly one extension"),
        ({"subject.x": 1}, "filter.subject.x", "`subject` is a single value and has no sub-fields"),
        ({"data.x": {"a": 1}}, "filter.data.x", 'to compare with an object literal use {"$eq": {...}}'),
        ({"data.x": {}}, "filter.data.x", 'an object value must be an operator object like {"$gt": 1}'),
        ({"data.x": {"$gt": 1, "a": 1}}, "filter.data.x", "mixes operators ($gt) with plain keys (a)"),
        ({"data.x": {"$foo": 1}}, "filter.data.x.$foo", "unknown operator `$foo`; supported: $eq, $ne, $gt"),
        (
            {"data.x": {"$not": {"$gt": 1}}},
            "filter.data.x.$not",
            "`$not` combines filter objects, so it goes at filter",
        ),
        ({"data.x": {"$in": "a"}}, "filter.data.x.$in", "`$in` needs an array, got string"),
        ({"data.x": {"$nin": 3}}, "filter.data.x.$nin", "`$nin` needs an array, got number"),
        ({"data.x": {"$exists": 1}}, "filter.data.x.$exists", "`$exists` needs true or false, got number"),
        ({"data.x": {"$exists": "yes"}}, "filter.data.x.$exists", "`$exists` needs true or false, got string"),
        ({"data.x": {"$prefix": 1}}, "filter.data.x.$prefix", "`$prefix` needs a string, got number"),
        ({"data.x": {"$regex": 1}}, "filter.data.x.$regex", "`$regex` needs a string, got number"),
        ({"data.x": {"$regex": "("}}, "filter.data.x.$regex", "`$regex` does not compile (RE2 syntax): missing )"),
        ({"data.x": {"$gt": True}}, "filter.data.x.$gt", "`$gt` needs a number or a string, got boolean"),
        ({"data.x": {"$lte": None}}, "filter.data.x.$lte", "`$lte` needs a number or a string, got null"),
        ({"data.x": {"$lt": [1]}}, "filter.data.x.$lt", "`$lt` needs a number or a string, got array"),
        ({"data.x": {"$gte": {"a": 1}}}, "filter.data.x.$gte", "`$gte` needs a number or a string, got object"),
        (
            {"$or": [{"subject": "a"}, {"$and": [{"data.x": {"$prefix": 3}}]}]},
            "filter.$or[1].$and[0].data.x.$prefix",
            "`$prefix` needs a string, got number",
        ),
        ({"$not": {"nope": 1}}, "filter.$not.nope", "unknown root `nope`"),
    ],
)
def test_parse_errors_name_the_place_and_the_problem(
    value: str | Mapping[str, object], field: str, expected: str
) -> None:
    actual_field, detail = parse_error(value)
    assert actual_field == field
    assert expected in detail


def test_parse_errors_use_the_callers_field() -> None:
    assert parse_error({"data.x": {"$in": 1}}, "subscription.filter")[0] == "subscription.filter.data.x.$in"
    assert parse_error("[]", "subscription.filter")[0] == "subscription.filter"


def test_non_mapping_input_is_rejected() -> None:
    field, detail = parse_error([{"subject": "a"}])  # type: ignore[arg-type]
    assert (field, detail) == ("filter", "must be a JSON object, got array")


def test_regex_runs_in_linear_time_and_refuses_backtracking_only_syntax() -> None:
    # A classic catastrophic-backtracking pattern: with a backtracking engine this takes minutes.
    evil = ContentFilter.parse({"data.s": {"$regex": "^(a+)+$"}})
    assert evil is not None
    assert evil.matches({"data": {"s": "a" * 5000 + "b"}}) is False
    assert evil.matches({"data": {"s": "a" * 5000}}) is True
    with pytest.raises(InvalidArgumentError, match="RE2"):
        ContentFilter.parse({"data.s": {"$regex": r"(a)\1"}})

"""Content filters against a reference written from DESIGN.md §2 alone, and arbitrary filters refused cleanly.

The reference evaluates the filter straight off the generated event (its own reading of paths, no shared
document builder), with the rules of §2: literals mean equality, numbers compare as numbers and strings as strings
with no coercion, an absent path fails every operator but `$exists: false`, non-JSON data has no `data` paths.
JSON equality is the JSON one: `1 == 1.0`, `true != 1`."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from eventbus.errors import InvalidArgumentError
from eventbus.filters import ContentFilter
from eventbus.model import Event, filter_document
from tests.fuzz.profiles import fuzz, outcome

ABSENT: Any = object()
KEYS = ["amount", "currency", "customer", "email", "a"]
STRINGS = ["", "a", "ab", "b", "BRL", "vip-1", "1", "é"]
REGEXES = ["^a", "b$", "a.", "^vip-", "[0-9]", "é"]
PATHS = [
    "data",
    "data.amount",
    "data.currency",
    "data.customer.email",
    "data.customer",
    "data.a.a",
    "subject",
    "source",
    "type",
    "id",
    "ext.tier",
    "ext.n",
]


# -- the reference ----------------------------------------------------------------------------------------------


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(left: object, right: object) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if is_number(left) or is_number(right):
        return is_number(left) and is_number(right) and left == right
    if isinstance(left, list) or isinstance(right, list):
        return (
            isinstance(left, list)
            and isinstance(right, list)
            and len(left) == len(right)
            and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
        )
    if isinstance(left, dict) or isinstance(right, dict):
        return (
            isinstance(left, dict)
            and isinstance(right, dict)
            and left.keys() == right.keys()
            and all(json_equal(left[k], right[k]) for k in left)
        )
    return type(left) is type(right) and left == right


def lookup(event: Event, data: object, path: str) -> object:
    """The value at `path`, or ABSENT: attributes by name, `ext.<name>`, and `data...` only for JSON data."""
    root, *rest = path.split(".")
    if root == "ext":
        return event.extensions.get(rest[0], ABSENT)
    if root == "data":
        value = data
        for key in rest:
            if not isinstance(value, dict) or key not in value:
                return ABSENT
            value = value[key]
        return value
    value = getattr(event, root)
    return ABSENT if value is None else value


def ordered(name: str, value: object, bound: object) -> bool:
    if not ((is_number(value) and is_number(bound)) or (isinstance(value, str) and isinstance(bound, str))):
        return False
    pair: tuple[Any, Any] = (value, bound)
    return {"$gt": pair[0] > pair[1], "$gte": pair[0] >= pair[1], "$lt": pair[0] < pair[1], "$lte": pair[0] <= pair[1]}[
        name
    ]


def ref_operator(name: str, operand: Any, value: object) -> bool:
    if name == "$exists":
        return (value is not ABSENT) is operand
    if value is ABSENT:
        return False
    if name == "$eq":
        return json_equal(value, operand)
    if name == "$ne":
        return not json_equal(value, operand)
    if name in ("$gt", "$gte", "$lt", "$lte"):
        return ordered(name, value, operand)
    if name == "$in":
        return any(json_equal(value, option) for option in operand)
    if name == "$nin":
        return not any(json_equal(value, option) for option in operand)
    if name == "$prefix":
        return isinstance(value, str) and value.startswith(operand)
    if name == "$regex":
        return isinstance(value, str) and re.search(operand, value) is not None
    raise AssertionError(name)


def ref_filter(document: dict[str, Any], event: Event, data: object) -> bool:
    for key, value in document.items():
        if key == "$and":
            result = all(ref_filter(item, event, data) for item in value)
        elif key == "$or":
            result = any(ref_filter(item, event, data) for item in value)
        elif key == "$not":
            result = not ref_filter(value, event, data)
        else:
            found = lookup(event, data, key)
            if isinstance(value, dict):
                result = all(ref_operator(name, operand, found) for name, operand in value.items())
            else:
                result = found is not ABSENT and json_equal(found, value)
        if not result:
            return False
    return True


# -- strategies -------------------------------------------------------------------------------------------------

numbers = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 1.0, 2.5, -1.5, 10**20]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.sampled_from(STRINGS))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
    max_leaves=8,
)
data_values = st.one_of(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5), json_values)


@st.composite
def events(draw: st.DrawFn) -> tuple[Event, object]:
    """An event with JSON data (most of the time) or bytes, a subject or none, and a few extensions."""
    data = draw(data_values)
    binary = draw(st.integers(0, 4)) == 0  # one event in five carries bytes, not JSON
    extensions = draw(
        st.dictionaries(st.sampled_from(["tier", "n"]), st.one_of(st.sampled_from(STRINGS[1:]), st.integers(-3, 3)))
    )
    event = Event.create(
        type=draw(st.sampled_from(["order.paid", "a", "b.a"])),
        source=draw(st.sampled_from(["/shop", "a", "vip-1"])),
        id=draw(st.sampled_from(["a", "1", "ab"])),
        subject=draw(st.sampled_from([None, "vip-1", "a", "b", "1"])),
        data=json.dumps(data).encode() if binary else data if data is not None else {"a": None},
        extensions=extensions,
    )
    # A str given to Event.create is text, not JSON: like bytes, it leaves only the attributes to filter on.
    if binary or isinstance(data, str):
        return event, ABSENT
    return event, data if data is not None else {"a": None}


operators = st.one_of(
    st.tuples(st.sampled_from(["$eq", "$ne"]), json_values),
    st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), st.one_of(numbers, st.sampled_from(STRINGS))),
    st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(json_values, max_size=3)),
    st.tuples(st.just("$exists"), st.booleans()),
    st.tuples(st.just("$prefix"), st.sampled_from(STRINGS)),
    st.tuples(st.just("$regex"), st.sampled_from(REGEXES)),
)
conditions = st.one_of(
    scalars,
    st.lists(scalars, max_size=2),
    st.lists(operators, min_size=1, max_size=2).map(dict),
)
filters = st.recursive(
    st.dictionaries(st.sampled_from(PATHS), conditions, min_size=1, max_size=3),
    lambda inner: st.one_of(
        st.tuples(st.sampled_from(["$and", "$or"]), st.lists(inner, min_size=1, max_size=3)).map(lambda kv: dict([kv])),
        inner.map(lambda f: {"$not": f}),
        st.tuples(inner, inner).map(lambda pair: {**pair[0], **pair[1]}),
    ),
    max_leaves=5,
)


# -- properties -------------------------------------------------------------------------------------------------


@fuzz(300)
@given(document=filters, generated=events())
def test_matching_agrees_with_the_reference(document: dict[str, Any], generated: tuple[Event, object]) -> None:
    event, data = generated
    compiled = ContentFilter.parse(document)
    assert compiled is not None
    expected = ref_filter(document, event, data)
    assert compiled.matches(filter_document(event)) is expected, (document, event)
    # The text form (what the API and the store keep) compiles to the same predicate.
    again = ContentFilter.parse(json.dumps(document))
    assert again is not None and again.matches(filter_document(event)) is expected


arbitrary_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.sampled_from([*PATHS, "$and", "$or", "$not", "$gt", "$regex", "$x"]), st.text()),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=10,
)


@fuzz(300)
@given(document=st.one_of(arbitrary_json, arbitrary_json.map(json.dumps), st.text(max_size=40)), generated=events())
def test_any_filter_is_compiled_or_refused_with_invalid_argument(
    document: Any, generated: tuple[Event, object]
) -> None:
    compiled = outcome(lambda: ContentFilter.parse(document, "subscription.filter"))
    if isinstance(compiled, InvalidArgumentError):
        assert compiled.violations and all(v.field.startswith("subscription.filter") for v in compiled.violations)
    elif compiled is not None:
        compiled.matches(filter_document(generated[0]))  # never raises on any event

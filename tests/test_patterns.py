"""Event type patterns: grammar, system-event rule, parse errors and a randomised check against the grammar."""

from __future__ import annotations

import random

import pytest

from eventbus.errors import InvalidArgumentError
from eventbus.patterns import TYPE_SEGMENT, PatternSet, TypePattern, is_system_type, validate_type


def field_and_detail(error: pytest.ExceptionInfo[InvalidArgumentError]) -> tuple[str, str]:
    (violation,) = error.value.violations
    return violation.field, violation.detail


# --- validate_type ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_", ["order", "order.paid", "order.item.added", "a-b_c.D9", "eventbus.endpoint.failing"])
def test_valid_types_pass(type_: str) -> None:
    validate_type(type_)


@pytest.mark.parametrize(
    ("type_", "expected"),
    [
        ("", "must not be empty"),
        (".order", "empty segment at position 1"),
        ("order.", "empty segment at position 2"),
        ("order..paid", "empty segment at position 2"),
        ("order.a b", "segment 2 ('a b') has characters outside [A-Za-z0-9_-]"),
        ("order.*", "segment 2 ('*') has characters outside"),
        ("pedido.açaí", "segment 2 ('açaí') has characters outside"),
        ("order.paid\n", "segment 2 ('paid\\n') has characters outside"),
    ],
)
def test_invalid_types_name_the_field_and_the_segment(type_: str, expected: str) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        validate_type(type_, "events[3].type")
    field, detail = field_and_detail(error)
    assert field == "events[3].type"
    assert expected in detail
    assert error.value.message.startswith("events[3].type: ")


def test_validate_type_default_field() -> None:
    with pytest.raises(InvalidArgumentError) as error:
        validate_type("")
    assert field_and_detail(error)[0] == "type"


def test_type_segment_regex() -> None:
    assert TYPE_SEGMENT.fullmatch("Az09_-")
    assert not TYPE_SEGMENT.fullmatch("a.b")
    assert not TYPE_SEGMENT.fullmatch("")


# --- matching ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "type_", "expected"),
    [
        ("order.*", "order.paid", True),
        ("order.*", "order", False),
        ("order.*", "order.item.added", False),
        ("order.**", "order.paid", True),
        ("order.**", "order.item.added", True),
        ("order.**", "order", False),
        ("order.**", "orders.paid", False),
        ("order.>", "order.item.added", True),
        ("order.>", "order", False),
        ("**", "order", True),
        ("**", "order.item.added", True),
        (">", "x", True),
        ("order.paid", "order.paid", True),
        ("order.paid", "order.paid.late", False),
        ("order.paid", "order", False),
        ("*", "order", True),
        ("*", "order.paid", False),
        ("*.paid", "order.paid", True),
        ("*.paid", "order.refunded", False),
        ("*.item.*", "order.item.added", True),
        ("*.item.*", "order.line.added", False),
        ("order.*.**", "order.item.added", True),
        ("order.*.**", "order.item", False),
        ("*.*.**", "a.b.c.d", True),
        ("a.*.c.**", "a.x.c.d.e", True),
        ("a.*.c.**", "a.x.d.d.e", False),
    ],
)
def test_matching(pattern: str, type_: str, expected: bool) -> None:
    assert TypePattern.parse(pattern).matches(type_) is expected
    assert PatternSet.parse([pattern]).matches(type_) is expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("**", False),
        (">", False),
        ("*", False),
        ("*.endpoint.failing", False),
        ("*.*.*", False),
        ("*.**", False),
        ("eventbus.**", True),
        ("eventbus.>", True),
        ("eventbus.*.failing", True),
        ("eventbus.endpoint.failing", True),
        ("eventbus.endpoint.*", True),
    ],
)
def test_system_events_only_match_patterns_starting_with_eventbus(pattern: str, expected: bool) -> None:
    assert TypePattern.parse(pattern).matches("eventbus.endpoint.failing") is expected
    assert PatternSet.parse([pattern]).matches("eventbus.endpoint.failing") is expected


def test_system_rule_applies_to_the_bare_eventbus_type_too() -> None:
    assert is_system_type("eventbus")
    assert is_system_type("eventbus.x")
    assert not is_system_type("eventbusy.x")
    assert not TypePattern.parse("*").matches("eventbus")
    assert TypePattern.parse("eventbus").matches("eventbus")
    assert TypePattern.parse("*").matches("eventbusy")
    assert TypePattern.parse("**").matches("eventbusy.paid")


def test_alias_is_normalised() -> None:
    assert TypePattern.parse("order.>").text == "order.**"
    assert TypePattern.parse(">").text == "**"
    assert TypePattern("order.>") == TypePattern.parse("order.**")
    assert TypePattern.parse("order.*").text == "order.*"


def test_is_literal() -> None:
    assert TypePattern.parse("order.paid").is_literal
    assert not TypePattern.parse("order.*").is_literal
    assert not TypePattern.parse("order.**").is_literal


# --- TypePattern.parse errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "must not be empty"),
        ("**.paid", "`**` may only be the last segment (found at segment 1 of 2)"),
        ("order.>.paid", "`>` may only be the last segment (found at segment 2 of 3)"),
        ("**.**", "`**` may only be the last segment"),
        ("order..paid", "empty segment at position 2"),
        ("order.", "empty segment at position 2"),
        ("order.a b", "segment 2 ('a b') has characters outside [A-Za-z0-9_-]"),
        ("order.pa*", "segment 2 ('pa*') has characters outside [A-Za-z0-9_-]; wildcards"),
        ("order.***", "wildcards `*`, `**` and `>` must be whole segments"),
        ("order.>>", "must be whole segments"),
    ],
)
def test_pattern_parse_errors(text: str, expected: str) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        TypePattern.parse(text, "subscription.pattern")
    field, detail = field_and_detail(error)
    assert field == "subscription.pattern"
    assert expected in detail


def test_pattern_parse_default_field_and_direct_construction() -> None:
    with pytest.raises(InvalidArgumentError) as error:
        TypePattern.parse("a..b")
    assert field_and_detail(error)[0] == "pattern"
    with pytest.raises(InvalidArgumentError):
        TypePattern("a..b")


# --- PatternSet --------------------------------------------------------------------------------------------------


def test_empty_set_matches_every_ordinary_type_but_not_system_types() -> None:
    empty = PatternSet.parse([])
    assert empty.texts == ()
    assert empty.matches("order.paid")
    assert empty.matches("x")
    assert not empty.matches("eventbus.endpoint.failing")
    assert PatternSet(()).matches("order")


def test_set_matches_when_any_pattern_matches() -> None:
    patterns = PatternSet.parse(["order.paid", "invoice.*", "shipment.**"])
    assert patterns.matches("order.paid")
    assert patterns.matches("invoice.sent")
    assert patterns.matches("shipment.box.sealed")
    assert not patterns.matches("order.created")
    assert not patterns.matches("invoice")
    assert not patterns.matches("eventbus.endpoint.failing")


def test_set_with_everything_and_system_patterns() -> None:
    patterns = PatternSet.parse(["**", "order.*", "eventbus.endpoint.*"])
    assert patterns.matches("anything.at.all")
    assert patterns.matches("eventbus.endpoint.failing")
    assert not patterns.matches("eventbus.store.slow")


def test_set_removes_duplicates_keeping_order() -> None:
    patterns = PatternSet.parse(["b.*", "a.**", "b.*", "a.>", "c"])
    assert patterns.texts == ("b.*", "a.**", "c")
    assert patterns == PatternSet.parse(["b.*", "a.**", "c"])


def test_set_errors_name_the_index() -> None:
    with pytest.raises(InvalidArgumentError) as error:
        PatternSet.parse(["order.*", "order..paid"])
    field, detail = field_and_detail(error)
    assert field == "patterns[1]"
    assert "empty segment at position 2" in detail
    with pytest.raises(InvalidArgumentError) as error:
        PatternSet.parse(["ok", "**.x"], "subscriptions[2].patterns")
    assert field_and_detail(error)[0] == "subscriptions[2].patterns[1]"


def test_set_rejects_a_bare_string_and_non_strings() -> None:
    with pytest.raises(InvalidArgumentError) as error:
        PatternSet.parse("order.*")
    assert field_and_detail(error) == ("patterns", "must be a list of patterns, not a single string")
    with pytest.raises(InvalidArgumentError) as error:
        PatternSet.parse(["a", 3])  # type: ignore[list-item]
    assert field_and_detail(error) == ("patterns[1]", "must be a string, got int")


# --- randomised comparison with the grammar ---------------------------------------------------------------------


def reference_matches(pattern: str, type_: str) -> bool:
    """Straight from the grammar: `*` is one segment, a final `**`/`>` one or more, system types need `eventbus`."""
    wanted = ["**" if segment == ">" else segment for segment in pattern.split(".")]
    have = type_.split(".")
    if have[0] == "eventbus" and wanted[0] != "eventbus":
        return False

    def walk(i: int, j: int) -> bool:
        if i == len(wanted):
            return j == len(have)
        if wanted[i] == "**":
            return len(have) - j >= 1
        if j == len(have):
            return False
        return (wanted[i] == "*" or wanted[i] == have[j]) and walk(i + 1, j + 1)

    return walk(0, 0)


SEGMENTS = ["a", "b", "order", "eventbus", "x-1", "Y_2"]


def random_type(rng: random.Random) -> str:
    return ".".join(rng.choice(SEGMENTS) for _ in range(rng.randint(1, 5)))


def random_pattern(rng: random.Random) -> str:
    segments = [rng.choice([*SEGMENTS, "*", "*"]) for _ in range(rng.randint(0, 4))]
    if not segments or rng.random() < 0.4:
        segments.append(rng.choice(["**", ">"]))
    return ".".join(segments)


def test_matches_agrees_with_the_grammar_on_random_inputs() -> None:
    rng = random.Random(20240517)
    agreed_true = 0
    for _ in range(600):
        pattern = random_pattern(rng)
        compiled = TypePattern.parse(pattern)
        types = [random_type(rng) for _ in range(8)]
        # Also derive types from the pattern itself, so plenty of comparisons are expected to match.
        types.append(".".join(rng.choice(SEGMENTS) if s in ("*", "**", ">") else s for s in pattern.split(".")))
        for type_ in types:
            expected = reference_matches(pattern, type_)
            assert compiled.matches(type_) is expected, (pattern, type_)
            agreed_true += expected
    assert agreed_true > 300  # the sample really exercises matches, not only misses


def test_pattern_sets_agree_with_any_of_the_reference_on_random_inputs() -> None:
    rng = random.Random(7)
    for _ in range(300):
        texts = [random_pattern(rng) for _ in range(rng.randint(0, 4))]
        patterns = PatternSet.parse(texts)
        for _ in range(8):
            type_ = random_type(rng)
            if texts:
                expected = any(reference_matches(text, type_) for text in texts)
            else:
                expected = reference_matches("**", type_)
            assert patterns.matches(type_) is expected, (texts, type_)

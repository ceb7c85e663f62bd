"""Type patterns against a reference written from DESIGN.md §2 alone: same verdict on validity and on matching.

The reference is deliberately naive (split and compare, no shortcuts), so the optimised matchers in
`eventbus/patterns.py` (prefix tests, bounded splits, literal sets) are checked against the plain reading of the
contract. One reading is taken from the code's documented decision rather than the sentence in §2: the bare type
`eventbus` counts as a system type too (tests/test_patterns.py pins it), so "starting `eventbus.`" is read as
"whose first segment is `eventbus`"."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from eventbus.errors import InvalidArgumentError
from eventbus.patterns import PatternSet, TypePattern, validate_type
from tests.fuzz.profiles import fuzz, outcome

SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
# A small vocabulary, so generated patterns and types collide often enough for matches to happen.
WORDS = ["order", "paid", "item", "a", "B-1", "x_y", "eventbus", "eventbusy"]
WILDCARDS = ["*", "**", ">"]


# -- the reference ----------------------------------------------------------------------------------------------


def ref_valid_type(text: str) -> bool:
    """§2: segments separated by `.`, each `[A-Za-z0-9_-]+`."""
    return all(SEGMENT.fullmatch(segment) for segment in text.split("."))


def ref_valid_pattern(text: str) -> bool:
    """§2: segments or wildcards; `**` (alias `>`) only last."""
    segments = text.split(".")
    for position, segment in enumerate(segments):
        if segment in ("**", ">"):
            if position != len(segments) - 1:
                return False
        elif segment != "*" and not SEGMENT.fullmatch(segment):
            return False
    return True


def ref_matches(pattern: str, type_: str) -> bool:
    """§2: `*` one segment, `**`/`>` one or more trailing ones; system types only for `eventbus...` patterns."""
    wanted = ["**" if segment == ">" else segment for segment in pattern.split(".")]
    segments = type_.split(".")
    if segments[0] == "eventbus" and wanted[0] != "eventbus":
        return False
    if wanted[-1] == "**":
        fixed = wanted[:-1]
        if len(segments) < len(fixed) + 1:
            return False
    else:
        fixed = wanted
        if len(segments) != len(fixed):
            return False
    return all(want in ("*", have) for want, have in zip(fixed, segments, strict=False))


# -- strategies -------------------------------------------------------------------------------------------------

types = st.lists(st.sampled_from(WORDS), min_size=1, max_size=5).map(".".join)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    body = draw(st.lists(st.sampled_from([*WORDS, "*"]), min_size=0, max_size=4))
    tail = draw(st.sampled_from(["", "**", ">"]))
    segments = [*body, tail] if tail else body
    return ".".join(segments or ["*"])


# Arbitrary text biased towards the grammar's own characters, so near-misses are common.
pattern_text = st.lists(st.sampled_from([*"ab.*>-_ Z9é\n", "**", "eventbus"]), max_size=12).map("".join)


# -- properties -------------------------------------------------------------------------------------------------


@fuzz(400)
@given(pattern=patterns(), type_=types)
def test_matching_agrees_with_the_reference(pattern: str, type_: str) -> None:
    assert TypePattern.parse(pattern).matches(type_) is ref_matches(pattern, type_), (pattern, type_)


@fuzz(300)
@given(pattern_list=st.lists(patterns(), min_size=1, max_size=4), type_=types)
def test_a_pattern_set_is_the_or_of_its_patterns(pattern_list: list[str], type_: str) -> None:
    expected = any(ref_matches(pattern, type_) for pattern in pattern_list)
    assert PatternSet.parse(pattern_list).matches(type_) is expected, (pattern_list, type_)


@fuzz(300)
@given(text=pattern_text)
def test_pattern_validity_agrees_and_only_invalid_argument_is_raised(text: str) -> None:
    result = outcome(lambda: TypePattern.parse(text, "subscription.patterns[0]"))
    if isinstance(result, InvalidArgumentError):
        assert not ref_valid_pattern(text), text
        assert [v.field for v in result.violations] == ["subscription.patterns[0]"]
    else:
        assert ref_valid_pattern(text), text


@fuzz(300)
@given(text=st.one_of(pattern_text, st.text(max_size=30)))
def test_type_validity_agrees_and_only_invalid_argument_is_raised(text: str) -> None:
    result = outcome(lambda: validate_type(text, "events[0].type"))
    if isinstance(result, InvalidArgumentError):
        assert not ref_valid_type(text), text
        assert [v.field for v in result.violations] == ["events[0].type"]
    else:
        assert ref_valid_type(text), text

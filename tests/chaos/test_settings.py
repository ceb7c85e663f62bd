"""The crash runs' sizing variables: CHAOS_SEED, CHAOS_KILLS and CHAOS_SECONDS, and what bad values say."""

from __future__ import annotations

import pytest

from tests.chaos.harness import seed_from_env
from tests.chaos.test_crash_long import long_plan


def test_a_given_seed_is_replayed_and_a_missing_one_is_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOS_SEED", " 1828134779 ")
    assert seed_from_env() == 1828134779
    monkeypatch.delenv("CHAOS_SEED")
    assert 0 <= seed_from_env() < 2**32


@pytest.mark.parametrize("value", ["abc", "-3", "1.5"])
def test_a_seed_that_is_not_a_whole_number_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CHAOS_SEED", value)
    with pytest.raises(ValueError, match="CHAOS_SEED"):
        seed_from_env()


def test_the_long_run_defaults_to_200_kills_and_scales_database_crashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAOS_KILLS", raising=False)
    monkeypatch.delenv("CHAOS_SECONDS", raising=False)
    assert (long_plan().kills, long_plan().seconds, long_plan().database_crashes) == (200, None, 0)
    assert long_plan(crash_database=True).database_crashes == 20
    monkeypatch.setenv("CHAOS_KILLS", "30")
    assert (long_plan().kills, long_plan(crash_database=True).database_crashes) == (30, 3)
    monkeypatch.setenv("CHAOS_SECONDS", "600")
    assert (long_plan().kills, long_plan().seconds) == (30, 600.0)  # whichever comes first
    monkeypatch.delenv("CHAOS_KILLS")
    assert long_plan().seconds == 600.0 and long_plan().kills > 10_000  # the time alone ends it
    assert long_plan(crash_database=True).database_crashes == 30  # about 300 kills in 600 s
    monkeypatch.setenv("CHAOS_SECONDS", "25")
    assert long_plan(crash_database=True).database_crashes == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CHAOS_KILLS", "many"), ("CHAOS_KILLS", "-5"), ("CHAOS_SECONDS", "soon"), ("CHAOS_SECONDS", "0")],
)
def test_bad_sizes_are_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(pytest.UsageError, match=variable):
        long_plan()

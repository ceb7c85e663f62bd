"""Hypothesis settings of the fuzz suite: a derandomized `ci` profile (the default: the same examples every run, so
a failure in CI reproduces) and `long` (HYPOTHESIS_PROFILE=long, for `make chaos`: random and fifty times more).

The profile is applied per test with `@fuzz(n)` rather than `settings.load_profile`, which is global and would
change the examples of every other hypothesis user in the session (the schemathesis run)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from hypothesis import HealthCheck, settings

from eventbus.errors import InvalidArgumentError

F = TypeVar("F", bound=Callable[..., object])

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
LONG_FACTOR = 50


def examples(base: int) -> int:
    """How many examples a property gets under the active profile."""
    if PROFILE == "long":
        return base * LONG_FACTOR
    if PROFILE == "ci":
        return base
    raise ValueError(f"HYPOTHESIS_PROFILE={PROFILE!r}: use 'ci' or 'long'")


def fuzz(base: int) -> Callable[[F], F]:
    """`@fuzz(200)`: hypothesis settings for one property with `base` examples in CI."""
    count = examples(base)

    def apply(test: F) -> F:
        configured = settings(
            max_examples=count,
            derandomize=PROFILE == "ci",
            deadline=None,  # a busy 2-core machine: no per-example timing assertion
            database=None,  # nothing written under .hypothesis/ by CI runs
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            print_blob=True,
        )
        return configured(test)  # type: ignore[no-any-return]

    return apply


T = TypeVar("T")


def outcome(call: Callable[[], T]) -> T | InvalidArgumentError:
    """What `call` returned, or the `InvalidArgumentError` it raised; any other exception propagates (a bug)."""
    try:
        return call()
    except InvalidArgumentError as error:
        return error

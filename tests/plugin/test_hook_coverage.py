"""Meta-tests (Datasette's): every hook in hookspecs.py is typed, documented in docs/plugins.md, and tested."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from eventbus.plugin import hookspecs
from eventbus.plugin.manager import HOOKS

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "plugins.md"
SPECS = sorted(name for name in dir(hookspecs) if name.startswith("eventbus_"))
DOCUMENTED = re.compile(r"^#{2,4} `(eventbus_\w+)\(", re.MULTILINE)


def test_the_hook_set() -> None:
    assert SPECS == sorted(hookspecs.__all__) == list(HOOKS)
    assert SPECS, "hookspecs.py defines no hook"


@pytest.mark.parametrize("hook", SPECS)
def test_hook_is_typed_and_says_when_it_runs(hook: str) -> None:
    spec = getattr(hookspecs, hook)
    signature = inspect.signature(spec)
    assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values())
    assert signature.return_annotation is not inspect.Signature.empty
    assert "Runs" in (spec.__doc__ or ""), f"{hook}'s docstring must say when it runs"


@pytest.mark.parametrize("hook", SPECS)
def test_hook_is_documented_in_the_guide(hook: str) -> None:
    assert hook in DOCUMENTED.findall(GUIDE.read_text()), f"docs/plugins.md needs a heading: ### `{hook}(...)`"


def test_the_guide_documents_no_hook_that_does_not_exist() -> None:
    assert sorted(set(DOCUMENTED.findall(GUIDE.read_text()))) == SPECS


@pytest.mark.parametrize("hook", SPECS)
def test_hook_is_implemented_by_a_test_plugin(hook: str) -> None:
    this = Path(__file__).resolve()
    implemented_in = [
        path.relative_to(REPO)
        for path in (REPO / "tests").rglob("*.py")
        if path.resolve() != this and re.search(rf"def {hook}\(", path.read_text())
    ]
    assert implemented_in, f"no test implements {hook}: add a test plugin with `@hookimpl def {hook}(...)`"

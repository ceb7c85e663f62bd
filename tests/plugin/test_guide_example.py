"""The worked example of docs/plugins.md, extracted from the page, pip-installed, and its own tests run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.plugin.test_entry_points import pip_install

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
# A file of the example: a bold `eventbus-acme/<path>` line, a blank line, then a fenced block.
EXAMPLE_FILE = re.compile(r"^\*\*`(eventbus-acme/[^`]+)`\*\*\n\n```[a-z]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def test_the_worked_example_installs_and_passes_its_tests(tmp_path: Path) -> None:
    files = dict(EXAMPLE_FILE.findall(GUIDE.read_text()))
    assert sorted(files) == [
        "eventbus-acme/README.md",
        "eventbus-acme/eventbus_acme/__init__.py",
        "eventbus-acme/pyproject.toml",
        "eventbus-acme/tests/test_acme.py",
    ]
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    project, site = tmp_path / "eventbus-acme", tmp_path / "site"
    pip_install(project, site)

    environment = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_DISABLE_PLUGIN")}
    environment["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout

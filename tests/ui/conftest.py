"""Fixtures of the dashboard tests: Debian's chromium driven by Playwright (installed with apt when it is missing and
can be, else the browser tests skip and say why), and an in-process server with an admin key that may deliver to
loopback receivers."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from eventbus.clock import ManualClock
from eventbus.config import ServerSettings
from eventbus.runtime import EventBusServer

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
APT_TIMEOUT = 600  # seconds for each of `apt-get update` and `apt-get install`
# The first browser test's set-up may install chromium: its timeout covers both apt-get commands and the test.
SETUP_TIMEOUT = 2 * APT_TIMEOUT + 120
# In CI (CI=true) a browser test that cannot run fails instead of skipping: the issue asks for it to pass there.
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests get a timeout that leaves room for installing chromium (pytest-timeout counts set-up)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.timeout(SETUP_TIMEOUT))


def _cannot_run(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _apt_install_chromium() -> str:
    """Install Debian's chromium when this process may (root, apt-get present); what went wrong otherwise."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    if os.geteuid() != 0:
        return "not running as root, so apt-get cannot install it"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # The command: `apt-get update && apt-get install -y chromium`.
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=APT_TIMEOUT, env=environment, check=False
            )
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` took longer than {APT_TIMEOUT} s"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"`{' '.join(command)}` failed ({done.returncode}): {' / '.join(tail)}"
    return ""


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium; Playwright never downloads a browser of its own here."""
    try:  # checked first: without Playwright, installing a browser would be wasted minutes
        import playwright.async_api  # noqa: F401
    except ImportError as error:
        _cannot_run(f"browser tests need the `playwright` package (pip install -e '.[dev]'): {error}")
    if not CHROMIUM.exists():
        problem = _apt_install_chromium()
        if not CHROMIUM.exists():
            _cannot_run(f"browser tests need {CHROMIUM} (Debian's chromium) and it could not be installed: {problem}")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright  # the chromium fixture made sure it imports

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    opened = await context.new_page()
    opened.set_default_timeout(10_000)
    try:
        yield opened
    finally:
        await context.close()


@pytest.fixture
def clock() -> ManualClock:
    """Manual, but starting now: the times the dashboard shows (and the screenshot) are today's."""
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def server_settings(server_settings: ServerSettings) -> ServerSettings:
    """The receivers listen on 127.0.0.1: allow it as a destination (the SSRF guard refuses loopback otherwise)."""
    return dataclasses.replace(
        server_settings, allow_destinations=(ipaddress.ip_network("127.0.0.1/32"),), shutdown_grace=0.5
    )


@pytest.fixture
async def admin_key(server: EventBusServer) -> str:
    """A stored admin key: the server is no longer open, so the dashboard's key form matters."""
    created = await server.services.api_keys.create(["admin"], name="dashboard")
    assert not server.keys.open
    return created.key


@pytest.fixture
def dashboard_url(server: EventBusServer) -> str:
    assert server.addresses is not None
    return f"http://{server.addresses.http}/ui/"

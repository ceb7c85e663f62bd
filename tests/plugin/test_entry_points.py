"""A third-party plugin built as a real distribution in a temp dir, pip-installed, found through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventbus.plugin import Accepted, Headers, InboundRequest, SourceConfig, load_plugins

EVENTBUS = [sys.executable, "-m", "eventbus"]
REPO = Path(__file__).resolve().parents[2]

ACME_MODULE = '''
"""eventbus-acme: a third-party connector and destination, built only on the public plugin API."""

from __future__ import annotations

from eventbus.model import Event
from eventbus.plugin import Accepted, DestinationResult, Refused, hookimpl
from eventbus.signing import constant_time_equals


class AcmeConnector:
    name = "acme"

    def validate_options(self, options):
        return dict(options)

    async def handle(self, request, source, now):
        token = request.header("X-Acme-Token") or ""
        if not any(constant_time_equals(token, secret) for secret in source.secrets):
            return Refused.unauthorized("X-Acme-Token does not match", field="X-Acme-Token")
        delivery = request.header("X-Acme-Delivery")
        event = Event.create(
            type="acme.order.created", source=source.event_source, id=delivery, time=now, data=request.body
        )
        return Accepted([event], dedup_key=delivery)


class AcmeQueue:
    name = "acme-queue"

    def validate_options(self, options):
        return dict(options)

    async def deliver(self, delivery, context):
        return DestinationResult.success()


@hookimpl
def eventbus_register_connectors(registry):
    registry.add(AcmeConnector())


@hookimpl
def eventbus_register_destinations(registry):
    registry.add(AcmeQueue())
'''


def build_distribution(root: Path, *, dist: str, version: str, entry_point: str, module: str, code: str) -> Path:
    """Write a distribution's source under `root/src`, pip-install it into `root/site`, return the site dir."""
    source = root / "src"
    (source / module).mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{dist}"
            version = "{version}"
            dependencies = ["eventbus"]

            [project.entry-points.eventbus]
            {entry_point} = "{module}"
            """
        )
    )
    (source / module / "__init__.py").write_text(code)
    site = root / "site"
    pip_install(source, site)
    return site


def pip_install(source: Path, site: Path) -> None:
    """Install the distribution at `source` into the directory `site`, offline (the venv's setuptools builds it)."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-cache-dir"]
    options = ["--no-deps", "--no-build-isolation", "--target", str(site)]
    subprocess.run([*pip, *options, str(source)], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("acme")
    return build_distribution(
        root, dist="eventbus-acme", version="1.2.3", entry_point="acme", module="eventbus_acme", code=ACME_MODULE
    )


def run_plugins_command(site: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_DISABLE_PLUGIN")}
    environment.update(PYTHONPATH=str(site), **env)
    return subprocess.run(
        [*EVENTBUS, "plugins", "--json"], cwd=REPO, env=environment, capture_output=True, text=True, timeout=60
    )


def listed(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return {row["name"]: row for row in rows}


def test_the_command_lists_an_installed_plugin(acme_site: Path) -> None:
    plugins = listed(run_plugins_command(acme_site))

    assert plugins["acme"] == {
        "name": "acme",
        "version": "1.2.3",
        "dist": "eventbus-acme",
        "connectors": ["acme"],
        "destinations": ["acme-queue"],
        "failures": 0,
    }


def test_disable_plugins_hides_it(acme_site: Path) -> None:
    assert "acme" not in listed(run_plugins_command(acme_site, EVENTBUS_DISABLE_PLUGINS="other,acme"))


def test_disable_autoload_hides_it(acme_site: Path) -> None:
    assert "acme" not in listed(run_plugins_command(acme_site, EVENTBUS_DISABLE_PLUGIN_AUTOLOAD="1"))


async def test_the_installed_connector_serves_a_request(acme_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(acme_site))
    try:
        plugins = load_plugins(env={})
        connector = plugins.connectors().get("acme")
        assert connector is not None
        assert plugins.connectors().owner("acme") == "acme"
        request = InboundRequest(
            "POST",
            "/hooks/orders",
            headers=Headers.of({"X-Acme-Token": "old", "X-Acme-Delivery": "d-42"}),
            body=b'{"order": 1}',
            remote="203.0.113.9",
        )
        now = datetime(2026, 3, 1, tzinfo=UTC)
        result = await plugins.call_connector(connector, request, SourceConfig("orders", "acme", ("new", "old")), now)
    finally:
        sys.modules.pop("eventbus_acme", None)

    assert isinstance(result, Accepted)
    assert result.dedup_key == "d-42"
    [event] = result.events
    assert (event.type, event.source, event.id, event.data) == (
        "acme.order.created",
        "/hooks/orders",
        "d-42",
        b'{"order": 1}',
    )


def test_a_plugin_that_fails_to_import_stops_the_command_with_its_name(tmp_path: Path) -> None:
    site = build_distribution(
        tmp_path,
        dist="eventbus-broken",
        version="0.1",
        entry_point="broken",
        module="eventbus_broken",
        code="import eventbus_missing_dependency\n",
    )

    failed = run_plugins_command(site)
    assert failed.returncode == 1
    assert "plugin 'broken' (eventbus-broken 0.1) failed to import 'eventbus_broken'" in failed.stderr
    assert "ModuleNotFoundError" in failed.stderr
    assert "EVENTBUS_DISABLE_PLUGINS=broken" in failed.stderr
    assert "broken" not in listed(run_plugins_command(site, EVENTBUS_DISABLE_PLUGINS="broken"))

"""Reload (SIGHUP): what can change live is applied, what needs a restart is kept and named, a refused file
changes nothing; and a real `eventbus serve` process reloads on a real SIGHUP."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import signal
import time
from datetime import timedelta
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from eventbus.errors import UnauthenticatedError
from tests.config.conftest import SECRET, Servers, write
from tests.conftest import ServerProcess, start_server_process

KEY = "ebk_ops_0123456789abcdef"


def _key_entry(key: str, scopes: str = '["admin"]') -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f'api_keys = [{{ id = "ops", hash = "sha256:{digest}", scopes = {scopes} }}]\n'


async def test_live_settings_apply_and_restart_ones_are_named(servers: Servers, config_path: Path) -> None:
    write(config_path, "[limits]\nhooks_body_limit = 2048\n")
    server = await servers.start(config_path)
    assert server.hooks is not None and server.hooks.body_limit == 2048
    grpc_listen = server.settings.grpc_listen
    write(
        config_path,
        "[limits]\nhooks_body_limit = 4096\nmax_in_flight = 8\n"
        '[store]\nretention = "45s"\n'
        '[retry]\nschedule = ["2s"]\nmax_pending_age = "2h"\n'
        '[security]\nallow_destinations = ["192.0.2.0/24"]\n' + _key_entry(KEY) + "[metrics]\npublic = true\n"
        '[server]\nshutdown_grace = "3s"\n',
    )
    saved = structlog.get_config()
    with capture_logs() as logs:
        outcome = await server.reload()
    structlog.configure(**saved)
    assert outcome.ok, outcome.errors
    assert sorted(outcome.applied) == [
        "limits.hooks_body_limit",
        "retry.max_pending_age",
        "retry.schedule",
        "security.allow_destinations",
        "security.api_keys",
        "server.shutdown_grace",
        "store.retention",
    ]
    assert outcome.restart_needed == ["limits.max_in_flight", "metrics.public"]
    assert server.hooks.body_limit == 4096 and server.settings.shutdown_grace == 3.0
    assert server.bus.settings.retention == timedelta(seconds=45)
    assert server.bus.settings.retry_schedule == (timedelta(seconds=2),)
    assert server.bus.settings.max_pending_age == timedelta(hours=2)
    assert server.policy.allow == (ipaddress.ip_network("192.0.2.0/24"),)
    assert server.keys.authenticate(f"Bearer {KEY}") is not None
    # What needs a restart keeps running as it was, and one warning names it.
    assert server.settings.max_in_flight == 1024 and server.settings.metrics_public is False
    assert server.settings.grpc_listen == grpc_listen
    [warning] = [line for line in logs if line["event"] == "config_restart_needed"]
    assert warning["settings"] == ["limits.max_in_flight", "metrics.public"]

    # The keys leave the file: refused from the next call on (the server is open again, on loopback).
    write(
        config_path, '[security]\napi_keys = [{ id = "ops", hash = "sha256:' + "0" * 64 + '", scopes = ["admin"] }]\n'
    )
    assert sorted((await server.reload()).applied) == [
        "limits.hooks_body_limit",
        "retry.max_pending_age",
        "retry.schedule",
        "security.allow_destinations",
        "security.api_keys",
        "server.shutdown_grace",
        "store.retention",
    ]
    try:
        server.keys.authenticate(f"Bearer {KEY}")
        raise AssertionError("the removed key still authenticates")
    except UnauthenticatedError:
        pass
    assert server.hooks.body_limit == 1024 * 1024  # back to the default


async def test_a_refused_file_changes_nothing(servers: Servers, config_path: Path) -> None:
    write(config_path, '[store]\nretention = "1h"\n')
    server = await servers.start(config_path)
    write(config_path, '[store]\nretention = "soon"\n[logging]\nlevel = "loud"\n')
    with capture_logs() as logs:
        outcome = await server.reload()
    assert outcome.errors == [
        "store.retention: 'soon' is not a duration like 30s, 5m, 1h, 7d",
        "logging.level: 'loud': use debug, info, warning or error",
    ]
    assert server.settings.retention == timedelta(hours=1) == server.bus.settings.retention
    [line] = [line for line in logs if line["event"] == "config_reload_refused"]
    assert line["errors"] == outcome.errors and line["log_level"] == "error"


async def test_flags_still_win_on_reload(servers: Servers, config_path: Path) -> None:
    write(config_path, '[store]\nretention = "1h"\n')
    server = await servers.start(config_path, retention="2h")
    write(config_path, '[store]\nretention = "3h"\n')
    assert (await server.reload()).applied == []
    assert server.bus.settings.retention == timedelta(hours=2)


def _wait_for(process: ServerProcess, event: str, after: int = 0, timeout: float = 30) -> dict[str, object]:
    """The first JSON log line of `event` after the first `after` lines, within `timeout` (polls the log file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = process.log().splitlines()[after:]
        for line in lines:
            if line.startswith("{") and json.loads(line).get("event") == event:
                return dict(json.loads(line))
        if process.process.poll() is not None:
            raise AssertionError(f"the server exited:\n{process.log()}")
        time.sleep(0.05)
    raise AssertionError(f"no {event} line in {timeout} s:\n{process.log()}")


def test_sighup_reloads_a_real_server(tmp_path: Path, server_process: list[ServerProcess]) -> None:
    config = write(tmp_path / "eventbus.toml", '[security]\nallow_destinations = ["127.0.0.0/8"]\n')
    process = start_server_process(tmp_path, extra=["--config", str(config)])
    server_process.append(process)
    write(
        config,
        '[security]\nallow_destinations = ["127.0.0.0/8"]\n[server]\ngrpc_listen = "127.0.0.1:1"\n'
        "[metrics]\npublic = true\n"
        f'[[subscriptions]]\nname = "orders"\nurl = "http://127.0.0.1:9/o"\nsecret = "{SECRET}"\n',
    )
    seen = len(process.log().splitlines())
    process.signal(signal.SIGHUP)
    created = _wait_for(process, "config_subscription_created", seen)
    reloaded = _wait_for(process, "config_reloaded", seen)
    restart = _wait_for(process, "config_restart_needed", seen)
    assert created["name"] == "orders" and "sources/subscriptions" in reloaded["applied"]  # type: ignore[operator]
    assert restart["settings"] == ["metrics.public"]  # not server.grpc_listen: the flag --grpc-listen wins

    write(config, "[[subscriptions]]\nname = 1\n")
    seen = len(process.log().splitlines())
    process.signal(signal.SIGHUP)
    refused = _wait_for(process, "config_reload_refused", seen)
    assert refused["errors"][0] == "subscriptions[0].name: 1: a non-empty string"  # type: ignore[index]

    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0

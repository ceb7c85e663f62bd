"""A SIGHUP during the drain of a real `eventbus serve` is logged and ignored: it neither ends the process (SIGHUP's
default action) nor reloads; the drain completes and the exit status is 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from eventbus.config import ServerSettings
from tests.config.conftest import Servers, write
from tests.config.test_reload import _wait_for
from tests.conftest import ServerProcess, start_server_process
from tests.lifecycle.receiver import GatedReceiver
from tests.lifecycle.test_drain import WAIT, deliver_one


@pytest.fixture
async def receiver() -> AsyncIterator[GatedReceiver]:
    started = GatedReceiver()
    await started.start()
    try:
        yield started
    finally:
        await started.close()


async def test_a_sighup_during_the_drain_is_ignored_and_the_drain_completes(
    tmp_path: Path, server_process: list[ServerProcess], receiver: GatedReceiver
) -> None:
    config = write(tmp_path / "eventbus.toml", '[security]\nallow_destinations = ["127.0.0.1/32"]\n')
    running = await asyncio.to_thread(
        start_server_process, tmp_path, extra=["--config", str(config), "--shutdown-grace", "60"]
    )
    server_process.append(running)
    _, event_id = await deliver_one(running, receiver, "held-1")  # held at the receiver: the drain waits for it

    seen = len(running.log().splitlines())
    running.signal(signal.SIGTERM)
    await asyncio.to_thread(_wait_for, running, "server_stopping", seen, WAIT)
    running.signal(signal.SIGHUP)
    ignored = await asyncio.to_thread(_wait_for, running, "config_reload_ignored", seen, WAIT)
    assert ignored["reason"] == "shutting down"

    receiver.release.set()
    status = await asyncio.to_thread(running.wait, WAIT)
    log = running.log()
    assert status == 0, log[-3000:]
    assert "server_stopped" in log and "Traceback" not in log and "config_reloaded" not in log, log[-3000:]
    assert receiver.answered == [event_id]  # the in-flight send finished inside the drain


async def test_an_unexpected_failure_of_a_reload_is_logged_not_raised(servers: Servers, config_path: Path) -> None:
    write(config_path, "")
    server = await servers.start(config_path)

    def broken() -> ServerSettings:
        raise OSError("the disk went away")

    server.reloader.read = broken
    with capture_logs() as logs:
        outcome = await server.reload()
    assert outcome.errors == ["the reload failed: OSError: the disk went away"]
    [failed] = [line for line in logs if line["event"] == "config_reload_failed"]
    assert failed["error"] == "OSError: the disk went away" and failed["log_level"] == "error"

"""schemathesis against a live `eventbus serve` process: every operation of `/openapi.json`, a bounded and seeded
number of generated requests each (half of the path ids name real resources, so real answers are checked
too), and no answer may be a 5xx, break its documented schema, or come with an undocumented content type."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from eventbus.client import EventBusClient
from tests.conftest import ServerProcess, start_server_process
from tests.grpc.helpers import Consumer
from tests.rest.helpers import ADMIN_KEY, Rest, ok

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("schemathesis") is None, reason="schemathesis is not installed (pip install -e .[dev])"
)
MAX_EXAMPLES = 15  # per operation and phase
SEED = 20260101
BUDGET = 110  # seconds: the issue asks for under 2 minutes; the run takes well under one on 2 cores
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance"
WHSEC = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="


async def seed(process: ServerProcess) -> dict[str, str]:
    """One of each resource; their ids by the name of the path parameter that names them."""
    async with aiohttp.ClientSession() as session:
        rest = Rest(session, f"http://{process.http}", ADMIN_KEY)
        endpoint = ok(await rest.post("/v1/endpoints", {"url": "http://127.0.0.1:9/hook", "secret": WHSEC}), 201)
        published = ok(
            await rest.post(
                "/v1/events",
                {"events": [{"specversion": "1.0", "id": "seed-1", "source": "/shop", "type": "order.paid"}]},
            ),
            201,
        )
        source = ok(await rest.post("/v1/sources", {"name": "billing", "connector": "standardwebhooks"}), 201)
        key = ok(await rest.post("/v1/keys", {"scopes": ["publish"], "name": "fuzzed"}), 201)
        async with (
            EventBusClient(process.grpc, api_key=ADMIN_KEY, timeout=10) as client,
            Consumer(client.subscribe("billing", ["order.*"], start="earliest")),
        ):
            pass
        deliveries: list[str] = []
        for _ in range(200):  # the delivery is created with the event; its listing is immediate
            found = ok(await rest.get("/v1/deliveries", params={"subscription_id": endpoint["id"]}))["items"]
            deliveries = [d["id"] for d in found]
            if deliveries:
                break
            await asyncio.sleep(0.01)
        assert deliveries, "the seeded event made no delivery"
    return {
        "subscription_id": endpoint["id"],
        "delivery_id": deliveries[0],
        "source": source["name"],
        "group": "billing",
        "event_id": published["events"][0]["event_id"],
        "key_id": key["id"],
        "type": "order.paid",
    }


def config(ids: dict[str, str]) -> str:
    """schemathesis.toml: each path parameter is a real id half of the time, generated otherwise."""
    lines = []
    for name, value in ids.items():
        lines += [f"[dictionaries.{name}]", f'values = ["{value}"]', ""]
    lines.append("[parameters]")
    lines += [f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}' for name in ids]
    return "\n".join(lines) + "\n"


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    tmp_path: Path, server_process: list[ServerProcess]
) -> None:
    process = start_server_process(tmp_path, extra=["--api-key", ADMIN_KEY, "--allow-destination", "127.0.0.1/32"])
    server_process.append(process)
    ids = await seed(process)
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(config(ids))
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config_file),
        "run",
        f"http://{process.http}/openapi.json",
        "--header",
        f"Authorization: Bearer {ADMIN_KEY}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--workers",
        "2",
        "--no-color",
        "--request-timeout",
        "10",
    ]
    started = time.monotonic()
    run = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    try:
        output, _ = await asyncio.wait_for(run.communicate(), BUDGET)
    except TimeoutError:
        raise AssertionError(f"schemathesis did not finish in {BUDGET} s") from None
    finally:  # whatever ends the wait (the budget, pytest's own timeout), schemathesis does not outlive the test
        if run.returncode is None:
            run.kill()
            await run.wait()
    text = output.decode(errors="replace")
    cases = re.search(r"Test cases:\s*\n\s*(.+)", text)
    selected = re.search(r"Operations:\s+(\d+) selected / (\d+) total", text)
    print(
        f"schemathesis: {selected.group(1) if selected else '?'} operations, {cases.group(1) if cases else '?'}, "
        f"{time.monotonic() - started:.1f} s"
    )
    assert run.returncode == 0, text[-20000:] + "\n--- server log ---\n" + process.log()[-5000:]
    assert selected is not None and selected.group(1) == selected.group(2) != "0", "every operation is tested"
    assert '"level": "error"' not in process.log(), process.log()[-5000:]

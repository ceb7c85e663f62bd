"""The file's format: every key read, unknown keys and bad values refused naming their path, all at once; `env:`
references; `eventbus config check`; the documented example and the documentation of every setting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from eventbus.auth import Scope
from eventbus.configuration.file import ConfigFileError, load_config_file, parse_config
from eventbus.configuration.values import SETTINGS
from tests.config.conftest import SECRET

DOCS = Path(__file__).parents[2] / "docs"
DIGEST = "sha256:" + "a" * 64


def refused(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        parse_config(text, "eventbus.toml", env or {})
    return caught.value.errors


def test_every_section_is_read() -> None:
    loaded = parse_config(
        f"""
        [server]
        grpc_listen = "0.0.0.0:7000"
        shutdown_grace = "3s"
        [store]
        url = "env:DB_URL"
        retention = "30s"
        [limits]
        hooks_body_limit = 2048
        max_in_flight = 64
        [retry]
        schedule = ["1s", "1m", 30]
        max_pending_age = "2d"
        [security]
        allow_destinations = ["10.0.0.0/8", "::1/128"]
        insecure = true
        api_keys = [{{ id = "ops", hash = "{DIGEST}", scopes = ["publish", "subscribe"] }}]
        [tls]
        cert = "/etc/eventbus/cert.pem"
        key = "/etc/eventbus/key.pem"
        [logging]
        level = "WARNING"
        format = "json"
        [metrics]
        public = true
        subscription_labels = 5

        [[sources]]
        name = "shop"
        connector = "echo"
        secrets = ["env:SHOP_SECRET"]
        options = {{ mode = "strict" }}
        rate_limit = 5

        [[subscriptions]]
        name = "fulfilment"
        url = "https://fulfilment.example.com/hooks"
        secret = "{SECRET}"
        headers = {{ X-Team = "env:TEAM" }}
        patterns = ["order.*"]
        filter = {{ "data.amount" = {{ "$gte" = 100 }} }}
        retry_schedule = ["5s"]
        ordering = "subject"
        paused = true
        """,
        "f.toml",
        {"DB_URL": "postgresql://db/bus", "SHOP_SECRET": "s3cret", "TEAM": "shop"},
    )
    values = loaded.values
    assert values["grpc_listen"].port == 7000 and values["shutdown_grace"] == 3.0  # type: ignore[attr-defined]
    assert values["store_url"] == "postgresql://db/bus" and values["retention"] == timedelta(seconds=30)
    assert values["retry_schedule"] == (timedelta(seconds=1), timedelta(minutes=1), timedelta(seconds=30))
    assert (
        values["log_level"] == "warning" and values["insecure"] is True and values["metrics_subscription_labels"] == 5
    )
    assert len(values["allow_destinations"]) == 2  # type: ignore[arg-type]
    [key] = loaded.api_keys
    assert key.key_id == "key_ops" and key.digest == DIGEST and key.scopes == {Scope.PUBLISH, Scope.SUBSCRIBE}
    [source] = loaded.declarations.sources
    assert (source.name, source.secrets, source.options, source.rate_limit) == (
        "shop",
        ("s3cret",),
        {"mode": "strict"},
        5,
    )
    [subscription] = loaded.declarations.subscriptions
    assert subscription.kind == "webhook" and subscription.paused and subscription.ordering == "subject"
    assert subscription.options["headers"] == {"X-Team": "shop"} and subscription.options["secret"] == SECRET
    assert subscription.filter == '{"data.amount":{"$gte":100}}' and subscription.patterns == ("order.*",)


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    errors = refused(
        f"""
        colour = "blue"
        [server]
        grpc_listen = "nowhere"
        [retry]
        schedule = ["5s", "soon", "8d"]
        [logging]
        level = "loud"
        verbose = true
        [security]
        api_keys = [{{ id = "ops", hash = "md5:abc", scopes = ["root"] }}]

        [[subscriptions]]
        name = "a"
        url = "https://a.example.com"
        secret = "{SECRET}"

        [[subscriptions]]
        name = "b"
        kind = "rdstation"
        url = "https://b.example.com"

        [[subscriptions]]
        name = "a"
        secret = "not-a-whsec"
        patterns = ["order..paid"]
        filter = {{ "data.amount" = {{ "$near" = 1 }} }}
        ordering = "random"
        """
    )
    fields = [error.split(": ", 1)[0] for error in errors]
    assert fields == [
        "colour",
        "server.grpc_listen",
        "retry.schedule[1]",
        "logging.verbose",
        "logging.level",
        "security.api_keys[0].hash",
        "security.api_keys[0].scopes",
        "subscriptions[1].url",
        "subscriptions[2].name",
        "subscriptions[2].url",
        "subscriptions[2].secret",
        "subscriptions[2].patterns[0]",
        "subscriptions[2].filter.data.amount.$near",
        "subscriptions[2].ordering",
    ], errors
    assert "unknown section" in errors[0] and "'a' is declared twice (also subscriptions[0])" in errors[8]
    assert "only for kind webhook" in errors[7]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[store]\nretention = "7 days"', "store.retention: '7 days' is not a duration like 30s, 5m, 1h, 7d"),
        ('[store]\nretention = "0s"', "store.retention: '0s': between 1s and 3650d"),
        ("[limits]\nhooks_body_limit = 10", "limits.hooks_body_limit: 10: bytes, from 1024 to 16777216"),
        ("[limits]\nmax_in_flight = true", "limits.max_in_flight: True: sends at once, from 1 to 100000"),
        ("[retry]\nschedule = [true]", "retry.schedule[0]: True is not a duration"),
        ('[retry]\nmax_pending_age = "10s"', "retry.max_pending_age: '10s': between 1m and 30d"),
        ('[security]\nallow_destinations = ["10.0.0.0/33"]', "security.allow_destinations[0]: '10.0.0.0/33'"),
        ('[security]\ninsecure = "maybe"', "security.insecure: 'maybe': use true or false"),
        ("[metrics]\npublic = 1", "metrics.public: 1: use true or false"),
        ('[store]\nurl = "env:MISSING_URL"', "store.url: environment variable MISSING_URL is not set"),
        ("[server]\nlisten = 1", "server.listen: unknown key; known: grpc_listen, http_listen, shutdown_grace"),
        ("server = 1", "server: must be a table"),
        ('[[sources]]\nname = "Bad Name"\nconnector = "x"\nsecrets = ["s"]', "sources[0].name: 'Bad Name'"),
        ('[[sources]]\nname = "x"\nconnector = "x"', "sources[0].secrets: required"),
        ('[[sources]]\nname = "x"\nconnector = "x"\nsecrets = ["env:NOPE"]', "sources[0].secrets[0]: environment"),
        ('[[sources]]\nname = "x"\nconnector = "x"\nsecrets = ["a", "b", "c"]', "sources[0].secrets: "),
        ('[[subscriptions]]\nname = "x"\nurl = "u"\nsecret = "env:NOPE"', "subscriptions[0].secret: environment"),
        ('[[subscriptions]]\nname = "x"\nkind = "rdstation"\npaused = "no"', ""),  # "no" is a boolean word
        ("sources = 1", "sources: must be an array of tables"),
        ("[store\nurl = 1", "config: not valid TOML"),
    ],
)
def test_refusals_name_the_key(text: str, expected: str) -> None:
    if not expected:
        parse_config(text, "f.toml", {})
        return
    errors = refused(text)
    assert any(error.startswith(expected) for error in errors), errors


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"config: cannot read .*absent.toml"):
        load_config_file(str(tmp_path / "absent.toml"), {})


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventbus", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_config_check_accepts_the_documented_example() -> None:
    checked = _run("config", "check", str(DOCS / "eventbus.example.toml"), env=_example_env())
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok: ") and "subscriptions: 2 (fulfilment, crm)" in checked.stdout
    assert "sources: 1 (shop)" in checked.stdout


def test_config_check_lists_every_error_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[store]\nretention = "soon"\n[[subscriptions]]\nname = "x"\n', encoding="utf-8")
    checked = _run("config", "check", str(bad))
    assert checked.returncode == 2 and checked.stdout == ""
    assert f"eventbus config: config file {bad}: 3 errors:" in checked.stderr
    assert "  store.retention: 'soon' is not a duration" in checked.stderr
    assert "  subscriptions[0].url: required for a webhook subscription" in checked.stderr
    assert "  subscriptions[0].secret: required" in checked.stderr


def test_serve_refuses_a_bad_file_with_the_same_messages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[limits]\nmax_in_flight = 0\n[logging]\nlevel = "loud"\n', encoding="utf-8")
    served = _run("serve", "--config", str(bad), "--store", f"sqlite:///{tmp_path / 'x.db'}")
    assert served.returncode == 2, served.stderr
    assert "limits.max_in_flight: 0: sends at once, from 1 to 100000" in served.stderr
    assert "logging.level: 'loud'" in served.stderr and "server_ready" not in served.stderr
    assert not (tmp_path / "x.db").exists()  # refused before anything opened


def _example_env() -> dict[str, str]:
    """The variables docs/eventbus.example.toml refers to (`env:NAME`), with throwaway values."""
    text = (DOCS / "eventbus.example.toml").read_text(encoding="utf-8")
    return {name: SECRET if "WEBHOOK" in name else "x" for name in re.findall(r'"env:([A-Za-z0-9_]+)"', text)}


def test_the_documentation_names_every_setting_its_flag_and_variable() -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    for setting in SETTINGS:
        assert f"`{setting.path}`" in text, setting.path
        assert setting.env is None or f"`{setting.env}`" in text, setting.env
        assert setting.flag is None or f"`{setting.flag}`" in text, setting.flag
    for key in ("security.api_keys", "[[sources]]", "[[subscriptions]]", "env:", "SIGHUP", "eventbus config check"):
        assert key in text, key

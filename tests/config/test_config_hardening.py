"""Values that must not leak or slip through: errors about secret-bearing keys never echo the value, the grace and
durations are finite and bounded from every layer, and the documented example ships no guessable key."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from eventbus.config import settings_from
from eventbus.errors import InvalidArgumentError
from tests.config.conftest import Servers, write
from tests.config.test_file import DOCS, refused

LEAK = "shpss_0123456789abcdefLEAKME"


@pytest.mark.parametrize(
    "text",
    [
        f'[[sources]]\nname = "shop"\nconnector = "echo"\nsecrets = "{LEAK}"\n',  # a string, not a list
        f'[[sources]]\nname = "shop"\nconnector = "echo"\nsecrets = ["{LEAK}", "b", "c"]\n',
        f'[[sources]]\nname = "shop"\nconnector = "echo"\nsecrets = [["{LEAK}"]]\n',
        f'[[subscriptions]]\nname = "o"\nurl = "http://127.0.0.1:9/"\nsecret = ["{LEAK}"]\n',
        f'[[subscriptions]]\nname = "o"\nurl = "http://127.0.0.1:9/"\nsecret = "env:{LEAK}-x"\n',
        f'[security]\napi_keys = [{{ id = "ops", hash = "sha256:{"a" * 64}", scopes = ["{LEAK}"] }}]\n',
    ],
)
def test_errors_about_secret_bearing_keys_never_echo_the_value(text: str) -> None:
    errors = refused(text)
    assert errors and not any("LEAKME" in error for error in errors), errors


async def test_a_refused_reload_does_not_log_the_secret(servers: Servers, config_path: Path) -> None:
    write(config_path, "")
    server = await servers.start(config_path)
    write(config_path, f'[[sources]]\nname = "shop"\nconnector = "echo"\nsecrets = "{LEAK}"\n')
    with capture_logs() as logs:
        outcome = await server.reload()
    assert outcome.errors == ["sources[0].secrets: (a str of length 28): a list of 1 or 2 strings"]
    assert "LEAKME" not in repr(logs)


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf", "3601", "1e308"])
def test_the_shutdown_grace_is_finite_and_at_most_an_hour_from_every_layer(value: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="shutdown-grace"):
        settings_from({"shutdown_grace": value}, {})
    with pytest.raises(InvalidArgumentError, match="shutdown-grace"):
        settings_from({}, {"EVENTBUS_SHUTDOWN_GRACE": value})
    toml = {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(value, value)
    errors = refused(f"[server]\nshutdown_grace = {toml}\n")
    assert errors[0].startswith("server.shutdown_grace: "), errors
    assert settings_from({"shutdown_grace": "3600"}, {}).shutdown_grace == 3600.0
    assert settings_from({"shutdown_grace": "0"}, {}).shutdown_grace == 0.0


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1.5"])
def test_durations_and_rates_in_the_file_are_finite(value: str) -> None:
    errors = refused(
        f"[store]\nretention = {value}\n"
        f'[[subscriptions]]\nname = "o"\nkind = "x"\nrate_limit = {value}\nmax_pending_age = {value}\n'
    )
    assert [e.split(":")[0] for e in errors] == [
        "store.retention",
        "subscriptions[0].max_pending_age",
        "subscriptions[0].rate_limit",
    ], errors


def test_the_example_ships_no_guessable_api_key() -> None:
    text = (DOCS / "eventbus.example.toml").read_text(encoding="utf-8")
    hashes = re.findall(r'hash = "sha256:([0-9a-f]{64})"', text)
    assert hashes, "the example shows how keys are declared"
    guessable = ["password", "1", "12345678", "admin", "secret", "changeme", "test", "key", "ops", "shop", ""]
    assert not {hashlib.sha256(word.encode()).hexdigest() for word in guessable} & set(hashes)
    assert "REPLACE these" in text

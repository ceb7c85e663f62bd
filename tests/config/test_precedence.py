"""Flags over `EVENTBUS_*` variables over the config file over defaults, setting by setting."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from eventbus.config import ServerSettings, settings_from
from eventbus.configuration.file import ConfigFileError
from eventbus.errors import InvalidArgumentError
from tests.config.conftest import write

FILE = """
[server]
http_listen = "127.0.0.1:9001"
grpc_listen = "127.0.0.1:9002"
[store]
retention = "1h"
[logging]
level = "warning"
[security]
insecure = true
[retry]
schedule = ["1s", "2s"]
"""


def test_each_layer_wins_over_the_next(tmp_path: Path) -> None:
    path = str(write(tmp_path / "eventbus.toml", FILE))
    only_file = settings_from({"config": path}, {})
    assert str(only_file.http_listen) == "127.0.0.1:9001" and only_file.retention == timedelta(hours=1)
    assert only_file.log_level == "warning" and only_file.insecure is True
    assert only_file.retry_schedule == (timedelta(seconds=1), timedelta(seconds=2))
    env = {"EVENTBUS_RETENTION": "30s", "EVENTBUS_HTTP_LISTEN": "127.0.0.1:9101", "EVENTBUS_INSECURE": "no"}
    over_file = settings_from({"config": path}, env)
    assert over_file.retention == timedelta(seconds=30) and str(over_file.http_listen) == "127.0.0.1:9101"
    assert over_file.insecure is False  # a variable saying no beats the file saying yes
    assert str(over_file.grpc_listen) == "127.0.0.1:9002"  # not in the environment: the file's
    flags = {"config": path, "retention": "2d", "http_listen": "127.0.0.1:9201", "log_level": "ERROR"}
    over_env = settings_from(flags, env)
    assert over_env.retention == timedelta(days=2) and str(over_env.http_listen) == "127.0.0.1:9201"
    assert over_env.log_level == "error"
    defaults = ServerSettings()
    assert over_env.max_pending_age == defaults.max_pending_age and over_env.max_in_flight == defaults.max_in_flight


def test_the_file_is_named_by_flag_or_variable(tmp_path: Path) -> None:
    first = str(write(tmp_path / "a.toml", '[store]\nretention = "1m"\n'))
    second = str(write(tmp_path / "b.toml", '[store]\nretention = "2m"\n'))
    assert settings_from({}, {"EVENTBUS_CONFIG": first}).retention == timedelta(minutes=1)
    chosen = settings_from({"config": second}, {"EVENTBUS_CONFIG": first})
    assert chosen.retention == timedelta(minutes=2) and chosen.config_file == second
    assert settings_from({}, {}).config_file is None


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"retention": "forever"}, {}, "retention: 'forever' is not a duration"),
        ({}, {"EVENTBUS_RETENTION": "-5s"}, "retention: '-5s' is not a duration"),
        ({}, {"EVENTBUS_RETRY_SCHEDULE": "5s,later"}, "retry-schedule[1]: 'later' is not a duration"),
        ({"max_in_flight": "lots"}, {}, "max-in-flight: 'lots': sends at once"),
        ({}, {"EVENTBUS_MAX_PENDING_AGE": "40d"}, "max-pending-age: '40d': between 1m and 30d"),
        ({}, {"EVENTBUS_METRICS_SUBSCRIPTION_LABELS": "x"}, "metrics-subscription-labels: 'x'"),
        ({"log_level": "loud"}, {}, "log-level: 'loud'"),
    ],
)
def test_bad_flags_and_variables_are_refused_by_the_same_rules(
    flags: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        settings_from(flags, env)
    assert refused.value.message.startswith(message), refused.value.message


def test_a_flag_does_not_excuse_a_bad_file(tmp_path: Path) -> None:
    """The whole file is checked even where a flag overrides a key: the file is wrong either way."""
    path = str(write(tmp_path / "eventbus.toml", '[store]\nretention = "soon"\n'))
    with pytest.raises(ConfigFileError, match=r"store\.retention"):
        settings_from({"config": path, "retention": "1d"}, {})


async def test_retention_reaches_the_bus(tmp_path: Path) -> None:
    from eventbus.runtime import EventBusServer
    from tests.conftest import store_url

    settings = settings_from({"store": store_url(tmp_path)}, {"EVENTBUS_RETENTION": "30s"})
    server = EventBusServer(settings)
    assert server.bus.settings.retention == timedelta(seconds=30)
    assert server.dispatcher.settings.max_in_flight == settings.max_in_flight

"""The rdstation destination's options: credentials modes, base URL, rate, and what the core reads off the class."""

from __future__ import annotations

import eventbus_rdstation
import pytest
from conftest import CONVERSION, SALE
from eventbus_rdstation.destination import RDStationDestination

from eventbus.errors import InvalidArgumentError
from eventbus.plugin import load_plugins

OAUTH = {"client_id": "app", "client_secret": "shh-secret", "refresh_token": "rt-1"}


def validate(**options: object) -> dict[str, object]:
    return RDStationDestination().validate_options({"mapping": SALE, **OAUTH, **options})


def refused(options: dict[str, object], field: str, why: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        RDStationDestination().validate_options(options)
    [violation] = caught.value.violations
    assert violation.field == field
    assert why in violation.detail


def test_the_plugin_registers_the_destination() -> None:
    plugins = load_plugins(extra=[eventbus_rdstation], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    destination = plugins.destinations().get("rdstation")
    assert isinstance(destination, RDStationDestination)
    assert destination.secret_options == {"api_key", "client_secret", "refresh_token"}
    assert (destination.timeout, destination.default_max_concurrency) == (30.0, 4)


def test_oauth_options_are_normalised() -> None:
    assert validate() == {
        "base_url": "https://api.rd.services",
        "mapping": {"event_type": "SALE", "payload": {**SALE["payload"], "funnel_name": "default"}},  # type: ignore[dict-item]
        "rate_limit_per_minute": 120,
        **OAUTH,
    }
    assert validate(base_url="http://127.0.0.1:8999/")["base_url"] == "http://127.0.0.1:8999"
    assert validate(rate_limit_per_minute="60")["rate_limit_per_minute"] == 60  # `--option K=V` gives strings
    assert validate(rate_limit_per_minute=500.0)["rate_limit_per_minute"] == 500  # a protobuf Struct gives doubles


def test_api_key_options() -> None:
    options = RDStationDestination().validate_options({"api_key": "k-1", "mapping": CONVERSION})
    assert options["api_key"] == "k-1"
    assert "client_id" not in options


@pytest.mark.parametrize(
    ("options", "field", "why"),
    [
        ({"mapping": SALE, **OAUTH, "endpoint": "x"}, "options.endpoint", "unknown option"),
        ({**OAUTH}, "options.mapping", "required"),
        ({"mapping": SALE}, "options", "credentials required"),
        ({"mapping": CONVERSION, "api_key": "k", "client_id": "app"}, "options.api_key", "not both"),
        ({"mapping": SALE, "client_id": "app", "refresh_token": "rt"}, "options.client_secret", "OAuth2 needs"),
        ({"mapping": SALE, "api_key": "k"}, "options.mapping.event_type", "an API key only sends CONVERSION events"),
        ({"mapping": CONVERSION, "api_key": ""}, "options.api_key", "non-empty"),
        ({"mapping": CONVERSION, "api_key": "a key"}, "options.api_key", "spaces"),
        ({"mapping": SALE, **OAUTH, "base_url": "ftp://rd.example"}, "options.base_url", "http(s)"),
        ({"mapping": SALE, **OAUTH, "base_url": "https://rd.example/?x=1"}, "options.base_url", "no query"),
        ({"mapping": SALE, **OAUTH, "base_url": "https://rd.example/#top"}, "options.base_url", "no query"),
        ({"mapping": SALE, **OAUTH, "base_url": "https://u:p@rd.example"}, "options.base_url", "user:password"),
        ({"mapping": SALE, **OAUTH, "base_url": "https://"}, "options.base_url", "with a host"),
        ({"mapping": SALE, **OAUTH, "rate_limit_per_minute": 0}, "options.rate_limit_per_minute", "1 to 10000"),
        ({"mapping": SALE, **OAUTH, "rate_limit_per_minute": 10_001}, "options.rate_limit_per_minute", "1 to"),
        ({"mapping": SALE, **OAUTH, "rate_limit_per_minute": True}, "options.rate_limit_per_minute", "1 to"),
        ({"mapping": {"event_type": "SALE", "payload": {}}, **OAUTH}, "options.mapping.payload", "required"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, object], field: str, why: str) -> None:
    refused(options, field, why)


def test_the_rate_limit_is_shared_per_account_and_never_shows_a_secret() -> None:
    destination = RDStationDestination()
    first = destination.rate_limit(validate(rate_limit_per_minute=90))
    assert first.per_second == 1.5
    assert first.key == destination.rate_limit(validate(refresh_token="another-rt")).key  # same app, same account
    assert first.key != destination.rate_limit(validate(client_id="other-app")).key
    keyed = destination.rate_limit(destination.validate_options({"api_key": "k-secret-1", "mapping": CONVERSION}))
    assert keyed.per_second == 2.0
    assert "k-secret-1" not in keyed.key
    assert all(secret not in first.key for secret in OAUTH.values())

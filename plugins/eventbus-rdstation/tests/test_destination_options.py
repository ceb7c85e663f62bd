"""The rdstation destination's options: credentials modes, base URL, rate, and what the core reads off the class."""

from __future__ import annotations

import eventbus_rdstation
import pytest
from conftest import CONVERSION, SALE
from eventbus_rdstation.destination import RDStationDestination

from eventbus.errors import InvalidArgumentError
from eventbus.plugin import load_plugins
from eventbus.plugin.destinations import RateLimit

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


def key(**options: object) -> str:
    return RDStationDestination().rate_limit(validate(**options)).key


def api_key_limit(api_key: str, **options: object) -> RateLimit:
    return RDStationDestination().rate_limit(
        RDStationDestination().validate_options({"api_key": api_key, "mapping": CONVERSION, **options})
    )


def test_the_rate_follows_the_option_and_the_key_never_shows_a_secret() -> None:
    oauth = RDStationDestination().rate_limit(validate(rate_limit_per_minute=90))
    keyed = api_key_limit("k-secret-1")
    assert (oauth.per_second, keyed.per_second) == (1.5, 2.0)
    assert "k-secret-1" not in keyed.key
    assert all(secret not in oauth.key for secret in OAUTH.values())
    assert "acme" not in key(account="acme")


def test_without_account_oauth_is_limited_per_authorization() -> None:
    # One OAuth app authorized by many customers' RD accounts: each authorization (refresh token) is its own budget.
    assert key() == key(rate_limit_per_minute=60)
    assert key() != key(refresh_token="another-customers-rt")
    assert key() != key(client_id="other-app")
    assert key() != key(base_url="https://rd.example")


def test_without_account_each_api_key_is_its_own_budget() -> None:
    assert api_key_limit("k-1").key == api_key_limit("k-1").key
    assert api_key_limit("k-1").key != api_key_limit("k-2").key
    assert api_key_limit("k-1").key != key()


def test_an_account_shares_one_budget_whatever_the_credentials() -> None:
    shared = key(account="acme")
    assert shared == key(account="acme", refresh_token="another-rt")
    assert shared == key(account="acme", client_id="other-app", client_secret="s2")
    assert shared == api_key_limit("k-1", account="acme").key == api_key_limit("k-2", account="acme").key
    assert shared != key(account="other-account")
    assert shared != key(account="acme", base_url="https://rd.example")
    assert shared != key()


def test_the_account_option_is_kept() -> None:
    assert validate(account="loja.acme@rd-1_x")["account"] == "loja.acme@rd-1_x"
    assert "account" not in validate()


@pytest.mark.parametrize("account", ["", "a" * 101, "has space", "conta/1", "contá", 7, ["acme"]])
def test_a_bad_account_is_refused(account: object) -> None:
    refused({"mapping": SALE, **OAUTH, "account": account}, "options.account", "[A-Za-z0-9._@-]")


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8999", "http://127.8.9.10", "http://[::1]:8999", "http://localhost:8999", "http://LOCALHOST"],
)
def test_plain_http_is_allowed_to_loopback(base_url: str) -> None:
    assert validate(base_url=base_url)["base_url"] == base_url


@pytest.mark.parametrize(
    "base_url", ["http://api.rd.services", "http://10.0.0.5:8080", "http://[2001:db8::1]", "http://localhost.example"]
)
def test_plain_http_elsewhere_is_refused(base_url: str) -> None:
    refused({"mapping": SALE, **OAUTH, "base_url": base_url}, "options.base_url", "https is required")

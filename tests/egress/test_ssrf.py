"""The destination policy: refused address forms, URL shape rules, the allowlist and the creation-time DNS check."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from eventbus.egress.ssrf import DestinationPolicy, parse_ip_literal
from eventbus.errors import InvalidArgumentError

REFUSED_URLS = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f.0.0.1/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://127.0.0.1.:8080/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://LocalHost./", "loopback"),
    ("http://api.localhost/", "loopback"),
    ("http://localhost.localdomain/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::127.0.0.1]/", "loopback"),
    ("http://10.0.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://100.100.100.200/", "cloud metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://192.0.2.1/", "documentation"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[2002:7f00:1::]/", "6to4"),
    ("http://[2002:a00:1::]/", "6to4"),
    ("http://[64:ff9b::7f00:1]/", "NAT64"),
    ("http://[64:ff9b:1::a]/", "NAT64"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    ("http://[fec0::1]/", "site-local"),
]


@pytest.mark.parametrize(("url", "kind"), REFUSED_URLS)
def test_refused_destinations(url: str, kind: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        DestinationPolicy().check_url(url, field="endpoint.url")
    violation = info.value.violations[0]
    assert violation.field == "endpoint.url"
    assert kind in violation.detail
    assert "--allow-destination" in violation.detail


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("ftp://example.com/hook", "scheme must be http or https"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("example.com/hook", "scheme must be http or https"),
        ("http://user:pass@example.com/", "credentials"),
        ("http://user@example.com/", "credentials"),
        ("http://:@example.com/", "credentials"),
        ("http://@example.com/", "credentials"),
        ("http:///hook", "must include a host"),
        ("http://", "must include a host"),
        ("https://example.com/hook#frag", "fragment"),
        ("https://example.com/hook#", "fragment"),
        ("https://example.com:99999/", "not a valid URL"),
        ("https://example.com:0/", "port"),
        ("https://exa mple.com/", "whitespace"),
        (" https://example.com/", "whitespace"),
        ("https://example.com/\x00", "control"),
        ("https://example.com/" + "a" * 2048, "at most 2048"),
    ],
)
def test_bad_urls(url: str, detail: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        DestinationPolicy().check_url(url)
    assert info.value.violations[0].field == "url"
    assert detail in info.value.violations[0].detail


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "https://example.com:8443/hook?token=abc",
        "http://93.184.216.34/",
        "http://[2606:4700:4700::1111]/",
        "http://[::ffff:93.184.216.34]/",
        "http://[64:ff9b::5db8:d822]/",
        "http://[2002:5db8:d822::1]/",
        "https://xn--bcher-kva.example/",
    ],
)
def test_allowed_public_forms(url: str) -> None:
    DestinationPolicy().check_url(url)


def test_non_canonical_public_literal_refused_as_undeliverable() -> None:
    with pytest.raises(InvalidArgumentError, match=r"dotted-decimal form \(93.184.216.34\)"):
        DestinationPolicy().check_url("http://1572395042/")


def test_allowlist_admits_loopback() -> None:
    policy = DestinationPolicy(allow=[ip_network("127.0.0.0/8")])
    for url in ("http://127.0.0.1:8080/", "http://localhost/", "http://[::ffff:127.0.0.1]/"):
        policy.check_url(url)
    with pytest.raises(InvalidArgumentError, match="dotted-decimal"):
        policy.check_url("http://127.1/x")  # admitted, but the HTTP client would refuse this spelling
    assert policy.blocked_reason("127.8.9.10") is None
    assert policy.blocked_reason("::ffff:127.0.0.2") is None
    assert policy.blocked_reason("::1") == "loopback address ::1"
    assert policy.blocked_reason("10.0.0.1") == "private address 10.0.0.1"
    with pytest.raises(InvalidArgumentError):
        policy.check_url("http://10.0.0.1/")


def test_blocked_reason_strings() -> None:
    policy = DestinationPolicy()
    assert policy.blocked_reason("127.0.0.1") == "loopback address 127.0.0.1"
    assert policy.blocked_reason(IPv4Address("169.254.169.254")) == "cloud metadata address 169.254.169.254"
    assert (
        policy.blocked_reason(ip_address("::ffff:10.1.2.3")) == "IPv4-mapped ::ffff:a01:203 (private address 10.1.2.3)"
    )
    assert policy.blocked_reason("not an address") == "unparseable address"
    assert policy.blocked_reason("127.1") == "unparseable address"  # only strict forms reach the connect guard
    for public in ("93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"):
        assert policy.blocked_reason(public) is None, public


def test_parse_ip_literal() -> None:
    assert parse_ip_literal("127.0.0.1") == (IPv4Address("127.0.0.1"), True)
    assert parse_ip_literal("0x7f.1") == (IPv4Address("127.0.0.1"), False)
    assert parse_ip_literal("[::1]") == (ip_address("::1"), True)
    assert parse_ip_literal("example.com") is None
    assert parse_ip_literal("") is None


async def test_resolve_and_check() -> None:
    policy = DestinationPolicy()
    with pytest.raises(InvalidArgumentError) as info:
        await policy.resolve_and_check("localhost", 80, field="endpoint.url")
    assert info.value.violations[0].field == "endpoint.url"
    assert "loopback" in info.value.violations[0].detail
    with pytest.raises(InvalidArgumentError, match="private"):
        await policy.resolve_and_check("10.1.1.1", 80)
    # A failed lookup is accepted: the connect-time guard still protects.
    await policy.resolve_and_check("no-such-host.invalid", 80)
    await DestinationPolicy(allow=[ip_network("127.0.0.0/8"), ip_network("::1/128")]).resolve_and_check("localhost", 80)


async def test_check_destination_runs_both_checks() -> None:
    with pytest.raises(InvalidArgumentError, match="scheme"):
        await DestinationPolicy().check_destination("gopher://example.com/")
    with pytest.raises(InvalidArgumentError, match="loopback"):
        await DestinationPolicy().check_destination("http://127.0.0.1:9/")

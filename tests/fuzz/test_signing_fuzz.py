"""Signature verification: a genuine request verifies, and any one flipped byte of its body, id, timestamp or
signature makes it fail: Standard Webhooks (`eventbus.signing`) and every bundled connector's HMAC scheme.

A flip XORs one byte with a non-zero mask. Hex digests are case-insensitive by definition (RFC 4648 §8), so a flip
that only changes the case of a hex signature or of its `sha256=`-style prefix denotes the same value and is not
counted as a change."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from eventbus_github import GitHubConnector
from eventbus_hmac import HmacConnector
from eventbus_shopify import ShopifyConnector
from eventbus_slack import SlackConnector
from eventbus_standardwebhooks import StandardWebhooksConnector
from eventbus_stripe import StripeConnector
from hypothesis import example, given
from hypothesis import strategies as st

from eventbus.errors import UnauthenticatedError
from eventbus.plugin import Accepted, Connector, Headers, InboundRequest, SourceConfig
from eventbus.signing import generate_secret, sign_v1, verify_standard_webhook
from tests.fuzz.profiles import fuzz

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
STANDARD_SECRET = generate_secret()
BODY = json.dumps({"type": "invoice.paid", "id": 991, "data": {"amount": 12.5, "note": "ação"}}).encode()


def flip(value: bytes, position: int, mask: int) -> bytes:
    index = position % len(value)
    return value[:index] + bytes([value[index] ^ mask]) + value[index + 1 :]


def flip_text(value: str, position: int, mask: int) -> str:
    # Header values are ASCII here; a mask under 0x80 keeps them ASCII (a str header carries any code point).
    return flip(value.encode("ascii"), position, mask & 0x7F or 1).decode("ascii")


positions = st.integers(min_value=0, max_value=10_000)
masks = st.integers(min_value=1, max_value=255)


# -- Standard Webhooks ------------------------------------------------------------------------------------------


def standard_headers(msg_id: str, timestamp: str, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": sign_v1(STANDARD_SECRET, msg_id, int(timestamp), body),
    }


@fuzz(400)
@given(
    part=st.sampled_from(["body", "webhook-id", "webhook-timestamp", "webhook-signature"]),
    position=positions,
    mask=masks,
    body=st.binary(min_size=1, max_size=64) | st.just(BODY),
)
@example(part="webhook-signature", position=45, mask=1, body=BODY)  # the last base64 character's unused bits
@example(part="webhook-signature", position=45, mask=2, body=BODY)
@example(part="webhook-signature", position=45, mask=3, body=BODY)
def test_standard_webhooks_any_flipped_byte_fails(part: str, position: int, mask: int, body: bytes) -> None:
    headers = standard_headers("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", str(TS), body)
    assert verify_standard_webhook(headers, body, secrets=[STANDARD_SECRET], now=NOW) == headers["webhook-id"]
    if part == "body":
        body = flip(body, position, mask)
    else:
        original = headers[part]
        headers[part] = flip_text(original, position, mask)
        if part == "webhook-signature" and headers[part].rstrip().rstrip("=") == original.rstrip("="):
            return  # padding turned into whitespace: the unpadded spelling, accepted on purpose
    with pytest.raises(UnauthenticatedError):
        verify_standard_webhook(headers, body, secrets=[STANDARD_SECRET], now=NOW)


# -- the bundled connectors -------------------------------------------------------------------------------------


def _hex(secret: str, message: bytes, algorithm: str = "sha256") -> str:
    return hmac.new(secret.encode(), message, algorithm).hexdigest()


@dataclass(frozen=True)
class Scheme:
    """One connector's signing: a genuine request, and which headers carry signed values."""

    connector: Connector
    secret: str
    options: dict[str, object]
    sign: Callable[[str, bytes], dict[str, str]]
    signed_headers: tuple[str, ...]
    case_insensitive: tuple[str, ...] = ()  # hex digests (and their prefixes)
    body: bytes = BODY


def _github(secret: str, body: bytes) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": "sha256=" + _hex(secret, body),
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "Content-Type": "application/json",
    }


def _stripe(secret: str, body: bytes) -> dict[str, str]:
    return {
        "Stripe-Signature": f"t={TS},v1={_hex(secret, f'{TS}.'.encode() + body)}",
        "Content-Type": "application/json",
    }


def _shopify(secret: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "X-Shopify-Hmac-SHA256": base64.b64encode(digest).decode(),
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        "Content-Type": "application/json",
    }


def _slack(secret: str, body: bytes) -> dict[str, str]:
    return {
        "X-Slack-Request-Timestamp": str(TS),
        "X-Slack-Signature": "v0=" + _hex(secret, f"v0:{TS}:".encode() + body),
        "Content-Type": "application/json",
    }


def _standard(secret: str, body: bytes) -> dict[str, str]:
    return {**standard_headers("msg_1", str(TS), body), "Content-Type": "application/json"}


def _generic(secret: str, body: bytes) -> dict[str, str]:
    return {
        "X-Acme-Signature": "sha512=" + _hex(secret, f"{TS}.".encode() + body, "sha512"),
        "X-Acme-Timestamp": str(TS),
        "Content-Type": "application/json",
    }


def _generic_base64(secret: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"X-Sig": base64.b64encode(digest).decode(), "Content-Type": "application/json"}


SCHEMES = {
    "github": Scheme(GitHubConnector(), "gh-secret", {}, _github, ("X-Hub-Signature-256",), ("X-Hub-Signature-256",)),
    "stripe": Scheme(
        StripeConnector(),
        "whsec_test",
        {},
        _stripe,
        ("Stripe-Signature",),
        ("Stripe-Signature",),
        json.dumps({"id": "evt_1", "type": "charge.paid", "created": TS, "data": {"object": {"id": "ch_1"}}}).encode(),
    ),
    "shopify": Scheme(ShopifyConnector(), "shop-secret", {}, _shopify, ("X-Shopify-Hmac-SHA256",)),
    "slack": Scheme(
        SlackConnector(),
        "8f742231b10e8888abcd99yyyzzz85a5",
        {},
        _slack,
        ("X-Slack-Request-Timestamp", "X-Slack-Signature"),
        ("X-Slack-Signature",),
        json.dumps(
            {"type": "event_callback", "event_id": "Ev01", "event": {"type": "app_mention", "text": "ação"}}
        ).encode(),
    ),
    "standardwebhooks": Scheme(
        StandardWebhooksConnector(),
        STANDARD_SECRET,
        {},
        _standard,
        ("webhook-id", "webhook-timestamp", "webhook-signature"),
    ),
    "hmac": Scheme(
        HmacConnector(),
        "acme-secret",
        {
            "header": "X-Acme-Signature",
            "prefix": "sha512=",
            "algorithm": "sha512",
            "signed": "{timestamp}.{body}",
            "timestamp_header": "X-Acme-Timestamp",
            "type": "acme.order",
        },
        _generic,
        ("X-Acme-Timestamp", "X-Acme-Signature"),
        ("X-Acme-Signature",),
    ),
    "hmac-base64": Scheme(
        HmacConnector(),
        "acme-secret",
        {"header": "X-Sig", "encoding": "base64", "type": "acme.order"},
        _generic_base64,
        ("X-Sig",),
    ),
}


def request_of(headers: dict[str, str], body: bytes) -> InboundRequest:
    return InboundRequest("POST", "/hooks/src", headers=Headers.of(headers), body=body, remote="127.0.0.1")


@fuzz(600)
@given(
    name=st.sampled_from(sorted(SCHEMES)),
    position=positions,
    mask=masks,
    header_index=st.integers(min_value=0, max_value=5),
    flip_body=st.booleans(),
)
async def test_connectors_any_flipped_signed_byte_fails(
    name: str, position: int, mask: int, header_index: int, flip_body: bool
) -> None:
    scheme = SCHEMES[name]
    source = SourceConfig(
        "src", scheme.connector.name, (scheme.secret,), scheme.connector.validate_options(scheme.options)
    )
    body = scheme.body
    headers = scheme.sign(scheme.secret, body)
    genuine = await scheme.connector.handle(request_of(headers, body), source, NOW)
    assert isinstance(genuine, Accepted), genuine
    if flip_body:
        body = flip(body, position, mask)
    else:
        header = scheme.signed_headers[header_index % len(scheme.signed_headers)]
        changed = flip_text(headers[header], position, mask)
        if header in scheme.case_insensitive and changed.lower() == headers[header].lower():
            return  # the same hex value in another case: not a change
        if header == "webhook-signature" and changed.rstrip().rstrip("=") == headers[header].rstrip("="):
            return  # padding turned into whitespace: the unpadded spelling, accepted on purpose
        headers[header] = changed
    forged = await scheme.connector.handle(request_of(headers, body), source, NOW)
    assert not isinstance(forged, Accepted), (name, headers, body)

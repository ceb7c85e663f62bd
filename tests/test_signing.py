"""Standard Webhooks signing: the official vectors, the reference verifier, rotation and refusals."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook, WebhookVerificationError

from eventbus.errors import InvalidArgumentError, UnauthenticatedError
from eventbus.signing import (
    constant_time_equals,
    generate_secret,
    generate_signing_key,
    hmac_sha256,
    parse_public_key,
    parse_secret,
    parse_signing_key,
    public_key_of,
    sign_v1,
    sign_v1a,
    signature_header,
    verify_signature_header,
    verify_standard_webhook,
)

# specs.md §1.8
SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
PAYLOAD = b'{"test": 2432232314}'
EXPECTED_V1 = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SEED_B = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk="
EXPECTED_V1A = "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="
PUBLIC_B = "ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g="
NOW_A = datetime.fromtimestamp(TIMESTAMP, tz=UTC)


def test_vector_a_v1() -> None:
    assert sign_v1(SECRET_A, MSG_ID, TIMESTAMP, PAYLOAD) == EXPECTED_V1
    assert sign_v1(parse_secret(SECRET_A), MSG_ID, TIMESTAMP, PAYLOAD) == EXPECTED_V1


def test_vector_c_v1() -> None:
    body = (
        b'{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z",'
        b'"data":{"id":"1f81eb52-5198-4599-803e-771906343485"}}'
    )
    expected = "v1,ARw42xaAApl/nxRo+iPGYwSaMQaOwMo2eyH5JBRA+bQ="
    assert sign_v1(SECRET_A, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", 1674087231, body) == expected


@pytest.mark.parametrize("key", [SEED_B, "whsk_" + SEED_B])
def test_vector_b_v1a_with_or_without_prefix(key: str) -> None:
    header = sign_v1a(key, MSG_ID, TIMESTAMP, PAYLOAD)
    assert header == EXPECTED_V1A
    assert public_key_of(key) == "whpk_" + PUBLIC_B
    # Independent check with cryptography and the documented public key.
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(PUBLIC_B))
    public.verify(base64.b64decode(header.removeprefix("v1a,")), f"{MSG_ID}.{TIMESTAMP}.".encode() + PAYLOAD)
    assert verify_signature_header(header, MSG_ID, TIMESTAMP, PAYLOAD, public_keys=[PUBLIC_B])
    assert verify_signature_header(header, MSG_ID, TIMESTAMP, PAYLOAD, public_keys=["whpk_" + PUBLIC_B])


def test_reference_library_verifies_our_headers() -> None:
    secret = generate_secret()
    body = b'{"type":"user.created","data":{"id":1}}'
    now = int(time.time())  # the reference verifier checks against the real clock
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": signature_header("msg_1", now, body, secrets=[secret], signing_key=generate_signing_key()),
    }
    assert Webhook(secret).verify(body, headers) == {"type": "user.created", "data": {"id": 1}}
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)


def test_reference_library_signature_matches_ours() -> None:
    when = datetime.fromtimestamp(TIMESTAMP, tz=UTC)
    assert Webhook(SECRET_A).sign(MSG_ID, when, PAYLOAD.decode()) == sign_v1(SECRET_A, MSG_ID, TIMESTAMP, PAYLOAD)


def test_rotation_signs_with_every_secret() -> None:
    current, previous = generate_secret(), generate_secret(24)
    header = signature_header("msg_r", TIMESTAMP, PAYLOAD, secrets=[current, previous])
    entries = header.split(" ")
    assert len(entries) == 2
    assert all(entry.startswith("v1,") for entry in entries)
    for secret, entry in zip([current, previous], entries, strict=True):
        assert entry == sign_v1(secret, "msg_r", TIMESTAMP, PAYLOAD)
        assert verify_signature_header(entry, "msg_r", TIMESTAMP, PAYLOAD, secrets=[secret])
        assert verify_signature_header(header, "msg_r", TIMESTAMP, PAYLOAD, secrets=[secret])


def test_signature_header_with_key_adds_v1a() -> None:
    key = generate_signing_key()
    header = signature_header("m", TIMESTAMP, PAYLOAD, secrets=[SECRET_A], signing_key=key)
    v1, v1a = header.split(" ")
    assert v1.startswith("v1,")
    assert v1a.startswith("v1a,")
    assert verify_signature_header(v1a, "m", TIMESTAMP, PAYLOAD, public_keys=[public_key_of(key)])
    with pytest.raises(ValueError, match="at least one"):
        signature_header("m", TIMESTAMP, PAYLOAD, secrets=[])


def _verifies(header: str, msg_id: str, timestamp: int, body: bytes) -> bool:
    return verify_signature_header(header, msg_id, timestamp, body, secrets=[SECRET_A], public_keys=[PUBLIC_B])


def test_any_flipped_byte_fails() -> None:
    header = signature_header(MSG_ID, TIMESTAMP, PAYLOAD, secrets=[SECRET_A], signing_key="whsk_" + SEED_B)
    assert _verifies(header, MSG_ID, TIMESTAMP, PAYLOAD)
    for i in range(len(PAYLOAD)):
        flipped = bytearray(PAYLOAD)
        flipped[i] ^= 0x01
        assert not _verifies(header, MSG_ID, TIMESTAMP, bytes(flipped))
    assert not _verifies(header, MSG_ID + "x", TIMESTAMP, PAYLOAD)
    assert not _verifies(header, MSG_ID, TIMESTAMP + 1, PAYLOAD)
    for entry in header.split(" "):
        version, encoded = entry.split(",", 1)
        raw = bytearray(base64.b64decode(encoded))
        for i in range(len(raw)):
            raw[i] ^= 0x80
            assert not _verifies(f"{version},{base64.b64encode(bytes(raw)).decode()}", MSG_ID, TIMESTAMP, PAYLOAD)
            raw[i] ^= 0x80


def test_verify_skips_unknown_and_malformed_entries() -> None:
    junk = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,abc nocomma v1,!!!notbase64 v1a,short= ,"
    assert verify_signature_header(f"{junk} {EXPECTED_V1}", MSG_ID, TIMESTAMP, PAYLOAD, secrets=[SECRET_A])
    assert not verify_signature_header(junk, MSG_ID, TIMESTAMP, PAYLOAD, secrets=[SECRET_A], public_keys=[PUBLIC_B])
    invalid = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="  # the reference libraries' negative fixture
    assert not verify_signature_header(invalid, MSG_ID, TIMESTAMP, PAYLOAD, secrets=[SECRET_A])
    assert not verify_signature_header("", MSG_ID, TIMESTAMP, PAYLOAD, secrets=[SECRET_A])
    # Raw key bytes work the same as the whsec_ form.
    assert verify_signature_header(EXPECTED_V1, MSG_ID, TIMESTAMP, PAYLOAD, secrets=[parse_secret(SECRET_A)])


def test_generated_secrets_and_keys_round_trip() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(parse_secret(secret)) == 32
    assert len(parse_secret(generate_secret(64))) == 64
    with pytest.raises(ValueError, match="24"):
        generate_secret(16)
    key = generate_signing_key()
    assert key.startswith("whsk_")
    assert len(base64.b64decode(key.removeprefix("whsk_"))) == 32
    public = public_key_of(key)
    assert public.startswith("whpk_")
    assert parse_public_key(public).public_bytes_raw() == parse_signing_key(key).public_key().public_bytes_raw()


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec_not*base64!", "base64"),
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "got 16"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "got 65"),
        ("whsec_", "got 0"),
    ],
)
def test_bad_secrets_refused_with_field(text: str, detail: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_secret(text, field="endpoint.secret")
    assert info.value.violations[0].field == "endpoint.secret"
    assert detail in info.value.violations[0].detail
    secret_part = text.removeprefix("whsec_")
    assert not secret_part or secret_part not in info.value.message


def test_secret_without_padding_is_accepted() -> None:
    padded = "whsec_" + base64.b64encode(b"y" * 25).decode()
    assert padded.endswith("=")
    assert parse_secret(padded.rstrip("=")) == b"y" * 25


@pytest.mark.parametrize("text", ["whsk_!!", "whsk_" + base64.b64encode(b"z" * 31).decode()])
def test_bad_signing_key_refused_with_field(text: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_signing_key(text, field="endpoint.signing_key")
    assert info.value.violations[0].field == "endpoint.signing_key"


def test_helpers() -> None:
    assert constant_time_equals("abc", b"abc")
    assert not constant_time_equals("abc", "abd")
    assert not constant_time_equals(b"abc", b"abcd")
    assert hmac_sha256(b"key", b"The quick brown fox jumps over the lazy dog").hex() == (
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


def _headers(signature: str, timestamp: int = TIMESTAMP, msg_id: str = MSG_ID) -> dict[str, str]:
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(timestamp), "Webhook-Signature": signature}


def test_verify_standard_webhook_accepts_and_returns_id() -> None:
    headers = _headers(f"v2,zzz {EXPECTED_V1}")
    assert verify_standard_webhook(headers, PAYLOAD, secrets=[SECRET_A], now=NOW_A) == MSG_ID
    # At the edge of the tolerance, both ways.
    for skew in (timedelta(minutes=5), -timedelta(minutes=5)):
        assert verify_standard_webhook(headers, PAYLOAD, secrets=[SECRET_A], now=NOW_A + skew) == MSG_ID
    assert verify_standard_webhook(_headers(EXPECTED_V1A), PAYLOAD, secrets=[], public_keys=[PUBLIC_B], now=NOW_A)


@pytest.mark.parametrize(
    ("headers", "now", "reason"),
    [
        ({"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP)}, NOW_A, "missing webhook-signature header"),
        ({"webhook-timestamp": str(TIMESTAMP), "webhook-signature": EXPECTED_V1}, NOW_A, "missing webhook-id header"),
        ({"webhook-id": MSG_ID, "webhook-signature": EXPECTED_V1}, NOW_A, "missing webhook-timestamp header"),
        (_headers(EXPECTED_V1), NOW_A + timedelta(minutes=5, seconds=1), "timestamp outside the 5-minute tolerance"),
        (_headers(EXPECTED_V1), NOW_A - timedelta(minutes=5, seconds=1), "timestamp outside the 5-minute tolerance"),
        (_headers(EXPECTED_V1), NOW_A + timedelta(days=365), "timestamp outside the 5-minute tolerance"),
        ({**_headers(EXPECTED_V1), "Webhook-Timestamp": "1e9"}, NOW_A, "invalid webhook-timestamp header"),
        (_headers("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="), NOW_A, "no signature matched"),
        (_headers(EXPECTED_V1, msg_id="msg_other"), NOW_A, "no signature matched"),
        (_headers("garbage"), NOW_A, "no signature matched"),
    ],
)
def test_verify_standard_webhook_refusals(headers: dict[str, str], now: datetime, reason: str) -> None:
    with pytest.raises(UnauthenticatedError) as info:
        verify_standard_webhook(headers, PAYLOAD, secrets=[SECRET_A], now=now)
    assert info.value.message == reason
    assert "g0hM9SsE" not in str(info.value)
    assert "MfKQ9r8G" not in str(info.value)


def test_verify_standard_webhook_flipped_body_refused() -> None:
    with pytest.raises(UnauthenticatedError, match="no signature matched"):
        verify_standard_webhook(_headers(EXPECTED_V1), PAYLOAD + b" ", secrets=[SECRET_A], now=NOW_A)

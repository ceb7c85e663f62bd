"""Standard Webhooks signing and verification (`v1` HMAC-SHA256, `v1a` ed25519), shared with plugins."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from eventbus.errors import InvalidArgumentError, UnauthenticatedError

__all__ = [
    "MAX_SECRET_BYTES",
    "MIN_SECRET_BYTES",
    "PUBLIC_KEY_PREFIX",
    "SECRET_PREFIX",
    "SIGNING_KEY_PREFIX",
    "constant_time_equals",
    "generate_secret",
    "generate_signing_key",
    "hmac_sha256",
    "parse_public_key",
    "parse_secret",
    "parse_signing_key",
    "public_key_of",
    "sign_v1",
    "sign_v1a",
    "signature_header",
    "signed_content",
    "verify_signature_header",
    "verify_standard_webhook",
]

SECRET_PREFIX = "whsec_"
SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64

# A header is attacker-controlled on the inbound side: bound the work (an ed25519 verify per entry per key).
_MAX_SIGNATURE_ENTRIES = 20


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict standard base64; missing padding is tolerated because the reference libraries tolerate it."""
    stripped = text.rstrip("=")
    return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    """Compare two secrets or signatures without leaking where they differ."""
    # Header values may carry undecodable bytes (as lone surrogates): they compare unequal, they never raise.
    left = a.encode("utf-8", "surrogateescape") if isinstance(a, str) else a
    right = b.encode("utf-8", "surrogateescape") if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """Raw HMAC-SHA256 digest (connectors for GitHub, Stripe and the like build on it)."""
    return hmac.new(key, message, hashlib.sha256).digest()


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """The exact bytes both schemes sign: `{msg_id}.{timestamp}.{body}`."""
    return f"{msg_id}.{timestamp}.".encode("utf-8", "surrogateescape") + body


# --- symmetric (v1) --------------------------------------------------------------------------------------------


def generate_secret(nbytes: int = 32) -> str:
    """A fresh `whsec_` secret of `nbytes` random bytes (24–64, as the spec requires)."""
    if not MIN_SECRET_BYTES <= nbytes <= MAX_SECRET_BYTES:
        raise ValueError(f"nbytes must be {MIN_SECRET_BYTES}–{MAX_SECRET_BYTES}, got {nbytes}")
    return SECRET_PREFIX + _b64encode(_secrets.token_bytes(nbytes))


def parse_secret(text: str, field: str = "secret") -> bytes:
    """The key bytes of a `whsec_` secret; anything else is refused naming `field` (never echoing the value)."""
    if not isinstance(text, str) or not text.startswith(SECRET_PREFIX):
        raise InvalidArgumentError.for_field(field, f"must start with {SECRET_PREFIX!r}")
    try:
        raw = _b64decode(text[len(SECRET_PREFIX) :])
    except (binascii.Error, ValueError):
        raise InvalidArgumentError.for_field(
            field, f"the part after {SECRET_PREFIX!r} must be standard base64"
        ) from None
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise InvalidArgumentError.for_field(
            field, f"must decode to {MIN_SECRET_BYTES}–{MAX_SECRET_BYTES} bytes, got {len(raw)}"
        )
    return raw


def _secret_key(secret: str | bytes) -> bytes:
    return secret if isinstance(secret, bytes) else _parsed_secret(secret)


@functools.lru_cache(maxsize=4096)
def _parsed_secret(secret: str) -> bytes:
    """Senders sign with the same few secrets all day: decode each once (errors are not cached)."""
    return parse_secret(secret)


def sign_v1(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>`; a str secret is a `whsec_` secret, bytes are the raw key."""
    digest = hmac_sha256(_secret_key(secret), signed_content(msg_id, timestamp, body))
    return "v1," + _b64encode(digest)


# --- asymmetric (v1a) ------------------------------------------------------------------------------------------


def generate_signing_key() -> str:
    """A fresh ed25519 signing key: `whsk_` + base64 of the 32-byte seed."""
    return SIGNING_KEY_PREFIX + _b64encode(Ed25519PrivateKey.generate().private_bytes_raw())


def _decode_key(text: str, prefix: str, field: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidArgumentError.for_field(field, "must be a string")
    body = text.removeprefix(prefix)
    try:
        return _b64decode(body)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError.for_field(
            field, f"must be standard base64 (optionally prefixed {prefix!r})"
        ) from None


def parse_signing_key(text: str, field: str = "signing_key") -> Ed25519PrivateKey:
    """An ed25519 private key from its base64 seed, with or without `whsk_` (spec §1.3).

    A 64-byte value (seed followed by public key, Go's layout) is accepted when its halves agree.
    """
    raw = _decode_key(text, SIGNING_KEY_PREFIX, field)
    if len(raw) not in (32, 64):
        raise InvalidArgumentError.for_field(field, f"must decode to a 32-byte ed25519 seed, got {len(raw)} bytes")
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and not hmac.compare_digest(key.public_key().public_bytes_raw(), raw[32:]):
        raise InvalidArgumentError.for_field(field, "the 64-byte key's public half does not match its seed")
    return key


def parse_public_key(text: str, field: str = "public_key") -> Ed25519PublicKey:
    """An ed25519 public key from base64 of its 32 raw bytes, with or without `whpk_`."""
    raw = _decode_key(text, PUBLIC_KEY_PREFIX, field)
    if len(raw) != 32:
        raise InvalidArgumentError.for_field(field, f"must decode to a 32-byte ed25519 public key, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_of(whsk: str) -> str:
    """The `whpk_` public key that verifies signatures made with `whsk`."""
    public = parse_signing_key(whsk).public_key().public_bytes_raw()
    return PUBLIC_KEY_PREFIX + _b64encode(public)


def sign_v1a(whsk: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1a,<base64 ed25519 signature>` over the same content as `v1`."""
    signature = parse_signing_key(whsk).sign(signed_content(msg_id, timestamp, body))
    return "v1a," + _b64encode(signature)


# --- headers ---------------------------------------------------------------------------------------------------


def signature_header(
    msg_id: str, timestamp: int, body: bytes, *, secrets: Sequence[str], signing_key: str | None = None
) -> str:
    """The `webhook-signature` value: one `v1` entry per secret (rotation signs with both), plus `v1a`."""
    entries = [sign_v1(secret, msg_id, timestamp, body) for secret in secrets]
    if signing_key is not None:
        entries.append(sign_v1a(signing_key, msg_id, timestamp, body))
    if not entries:
        raise ValueError("signature_header needs at least one secret or a signing key")
    return " ".join(entries)


def verify_signature_header(
    header: str,
    msg_id: str,
    timestamp: int,
    body: bytes,
    *,
    secrets: Sequence[str | bytes] = (),
    public_keys: Sequence[str] = (),
) -> bool:
    """True when any entry of `header` verifies; unknown versions and malformed entries are skipped."""
    content = signed_content(msg_id, timestamp, body)
    expected_v1 = [hmac_sha256(_secret_key(secret), content) for secret in secrets]
    keys = [parse_public_key(text) for text in public_keys]
    for entry in header.split()[:_MAX_SIGNATURE_ENTRIES]:
        version, sep, encoded = entry.partition(",")
        if not sep or version not in ("v1", "v1a"):
            continue
        try:
            signature = _b64decode(encoded)
        except (binascii.Error, ValueError):
            continue
        if _b64encode(signature).rstrip("=") != encoded.rstrip("="):
            # Non-zero unused bits in the last character decode to the same bytes: one signature, many spellings.
            # Refuse them as the reference verifiers do (they compare the canonical text), so no altered header
            # verifies.
            continue
        if version == "v1":
            if any(hmac.compare_digest(digest, signature) for digest in expected_v1):
                return True
        elif len(signature) == 64:
            for key in keys:
                try:
                    key.verify(signature, content)
                except InvalidSignature:
                    continue
                return True
    return False


def _tolerance_text(tolerance: timedelta) -> str:
    seconds = int(tolerance.total_seconds())
    return f"{seconds // 60}-minute" if seconds % 60 == 0 else f"{seconds}-second"


def verify_standard_webhook(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: Sequence[str | bytes],
    public_keys: Sequence[str] = (),
    now: datetime,
    tolerance: timedelta = timedelta(minutes=5),
) -> str:
    """Check a Standard Webhooks request and return its `webhook-id`; refusals raise `UnauthenticatedError`.

    Messages name what failed but never echo secrets or signatures.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not lowered.get(name):
            raise UnauthenticatedError(f"missing {name} header")
    msg_id = lowered["webhook-id"]
    raw_timestamp = lowered["webhook-timestamp"].strip()
    # int() would accept "+12", " 1_000" and the like; the spec says integer Unix seconds.
    if not raw_timestamp.isascii() or not raw_timestamp.isdigit() or len(raw_timestamp) > 12:
        raise UnauthenticatedError("invalid webhook-timestamp header")
    timestamp = int(raw_timestamp)
    reference = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    if abs(timestamp - reference.timestamp()) > tolerance.total_seconds():
        raise UnauthenticatedError(f"timestamp outside the {_tolerance_text(tolerance)} tolerance")
    if not verify_signature_header(
        lowered["webhook-signature"], msg_id, timestamp, body, secrets=secrets, public_keys=public_keys
    ):
        raise UnauthenticatedError("no signature matched")
    return msg_id

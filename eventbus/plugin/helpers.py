"""Helpers for connectors: read a JSON or form body, refuse options, check an HMAC against every active secret.

Each body helper returns the value or a `Refused` (400, `field="body"`) whose reason tells the sender what to
fix, so a connector can `return` it as is. The bundled connectors use them; third-party ones may too.
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from collections.abc import Iterable, Mapping

from eventbus.errors import InvalidArgumentError
from eventbus.model import is_json_media_type
from eventbus.plugin.connectors import InboundRequest, Refused
from eventbus.signing import constant_time_equals

__all__ = ["body_text", "json_body", "media_type", "no_options", "parse_form", "parse_json", "signed_by_any"]

MAX_FORM_FIELDS = 1000  # a form body with more fields is refused


def media_type(request: InboundRequest) -> str:
    """The Content-Type's media type without parameters, lowercased: `application/json`; "" when there is none."""
    return (request.header("Content-Type") or "").partition(";")[0].strip().lower()


def body_text(request: InboundRequest) -> str | Refused:
    """The body as text: the Content-Type's charset, when given, must be UTF-8, and the body must decode as UTF-8."""
    charset = _charset((request.header("Content-Type") or "").partition(";")[2])
    if charset not in (None, "utf-8", "utf8"):
        return Refused.bad_request(f"Content-Type charset {charset!r} is not supported: send UTF-8", field="body")
    try:
        return request.body.decode("utf-8")
    except UnicodeDecodeError:
        return Refused.bad_request("body is not valid UTF-8", field="body")


def parse_json(data: str | bytes) -> object | Refused:
    """`json.loads`, refused rather than raised: bytes that are not UTF-8, malformed JSON, JSON nested too deeply."""
    try:
        value: object = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except UnicodeDecodeError:
        return Refused.bad_request("body is not valid UTF-8", field="body")
    except RecursionError:
        return Refused.bad_request("body is not valid JSON: nested too deeply", field="body")
    except ValueError as exc:
        return Refused.bad_request(f"body is not valid JSON: {exc}", field="body")
    return value


def parse_form(text: str) -> list[tuple[str, str]] | Refused:
    """An `application/x-www-form-urlencoded` body's (name, value) pairs, in order, repeats and blank values kept.

    Refused when it does not parse (bad percent-escapes, more than `MAX_FORM_FIELDS` fields). Read the body with
    `body_text` first.
    """
    try:
        return urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except ValueError as exc:
        return Refused.bad_request(f"form body cannot be parsed: {exc}", field="body")


def json_body(request: InboundRequest, *, hint: str = "send application/json") -> object | Refused:
    """The JSON value of a JSON body (any JSON value: check its shape yourself).

    Refused when the Content-Type is neither absent nor JSON (`application/json`, `text/json`, `*+json`): the
    reason is "Content-Type '<type>' is not supported: <hint>", so say what the provider should send (e.g.
    "subscribe the webhook in JSON format"). Then as `body_text` and `parse_json`.
    """
    essence = media_type(request)
    if essence and not is_json_media_type(essence):
        return Refused.bad_request(f"Content-Type {essence!r} is not supported: {hint}", field="body")
    text = body_text(request)
    return text if isinstance(text, Refused) else parse_json(text)


def no_options(connector_name: str, options: Mapping[str, object]) -> dict[str, object]:
    """`validate_options` for a connector that takes none: `{}`, or `InvalidArgumentError` naming an option."""
    if options:
        raise InvalidArgumentError.for_field(
            f"options.{min(options)}", f"unknown option: the {connector_name} connector takes none"
        )
    return {}


def signed_by_any(
    secrets: Iterable[str], message: bytes, signatures: Iterable[str | bytes], *, algorithm: str = "sha256"
) -> bool:
    """Whether one of `signatures` is the HMAC of `message` under one of `secrets` (each used as UTF-8 bytes).

    A `bytes` signature is compared with the raw digest, a `str` one with the lowercase hex digest (lowercase it
    first). Every secret (two during a rotation) and every signature is compared, each in constant time.
    `algorithm` is a `hashlib` name: "sha256", "sha1", "sha512"...
    """
    given = tuple(signatures)
    matched = False
    for secret in secrets:
        digest = hmac.new(secret.encode("utf-8"), message, algorithm).digest()
        for signature in given:
            matched |= constant_time_equals(digest.hex() if isinstance(signature, str) else digest, signature)
    return matched


def _charset(parameters: str) -> str | None:
    """The `charset` parameter's value, unquoted and lowercased; None when there is none."""
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None

"""A source's options for the generic HMAC connector, checked once and kept as a frozen value."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

from eventbus.errors import InvalidArgumentError
from eventbus.model import is_valid_type

__all__ = ["ALGORITHMS", "DEFAULT_TYPE", "ENCODINGS", "OPTIONS", "Settings", "parse_settings"]

ALGORITHMS = ("sha1", "sha256", "sha512")
ENCODINGS = ("hex", "base64")
DEFAULT_TYPE = "webhook"
DEFAULT_TOLERANCE = 300
MAX_TOLERANCE = 86_400
OPTIONS = (
    "header",
    "algorithm",
    "encoding",
    "prefix",
    "signed",
    "timestamp_header",
    "tolerance",
    "type",
    "type_header",
    "type_field",
    "id_header",
    "id_field",
    "subject_field",
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
_PLACEHOLDERS = ("body", "timestamp")


@dataclass(frozen=True, slots=True)
class Settings:
    """What to verify and how to name the event; `pieces` is the `signed` template as (literal, placeholder)."""

    header: str
    algorithm: str
    encoding: str
    prefix: str
    signed: str
    pieces: tuple[tuple[str, str | None], ...]
    timestamp_header: str | None
    tolerance: int | None
    type: str | None
    type_header: str | None
    type_field: tuple[str, ...] | None
    id_header: str | None
    id_field: tuple[str, ...] | None
    subject_field: tuple[str, ...] | None

    @property
    def needs_json(self) -> bool:
        """True when a field of the body is read, so the body must be a JSON object."""
        return any(path is not None for path in (self.type_field, self.id_field, self.subject_field))

    def options(self) -> dict[str, object]:
        """The normalised options, defaults filled, unset ones left out."""
        values: dict[str, object] = {
            "header": self.header,
            "algorithm": self.algorithm,
            "encoding": self.encoding,
            "prefix": self.prefix,
            "signed": self.signed,
            "timestamp_header": self.timestamp_header,
            "tolerance": self.tolerance,
            "type": self.type,
            "type_header": self.type_header,
            "type_field": ".".join(self.type_field) if self.type_field else None,
            "id_header": self.id_header,
            "id_field": ".".join(self.id_field) if self.id_field else None,
            "subject_field": ".".join(self.subject_field) if self.subject_field else None,
        }
        return {key: value for key, value in values.items() if value is not None}


def parse_settings(options: Mapping[str, object]) -> Settings:
    """Check every option; a bad one raises `InvalidArgumentError` naming `options.<key>` and what it takes."""
    for key in options:
        if key not in OPTIONS:
            raise _bad(key, f"unknown option; the hmac connector takes {', '.join(OPTIONS)}")
    header = _header_name(options, "header")
    if header is None:
        raise _bad("header", "required: the request header that carries the signature, e.g. X-Signature")
    algorithm = _choice(options, "algorithm", ALGORITHMS, "sha256")
    encoding = _choice(options, "encoding", ENCODINGS, "hex")
    prefix = _text(options, "prefix", "") or ""
    signed = _text(options, "signed", "{body}") or "{body}"
    pieces = _template(signed)
    timestamp_header = _header_name(options, "timestamp_header")
    signs_timestamp = any(name == "timestamp" for _, name in pieces)
    if timestamp_header is None and signs_timestamp:
        raise _bad("signed", "uses {timestamp}: set timestamp_header to the header that carries it")
    if timestamp_header is not None and not signs_timestamp:
        # An unsigned timestamp is whatever a replayer sets it to: it would only look like replay protection.
        raise _bad("timestamp_header", "the timestamp must be signed: put {timestamp} in the signed template")
    tolerance = _tolerance(options, timestamp_header)
    fixed_type = _text(options, "type", None)
    if fixed_type is not None and not is_valid_type(fixed_type):
        raise _bad("type", "an event type suffix: segments of [A-Za-z0-9_-] separated by '.'")
    type_header = _header_name(options, "type_header")
    type_field = _path(options, "type_field")
    if type_header is not None and type_field is not None:
        raise _bad("type_field", "set type_header or type_field, not both")
    if fixed_type is None and type_header is None and type_field is None:
        fixed_type = DEFAULT_TYPE
    id_header = _header_name(options, "id_header")
    id_field = _path(options, "id_field")
    if id_header is not None and id_field is not None:
        raise _bad("id_field", "set id_header or id_field, not both")
    return Settings(
        header=header,
        algorithm=algorithm,
        encoding=encoding,
        prefix=prefix,
        signed=signed,
        pieces=pieces,
        timestamp_header=timestamp_header,
        tolerance=tolerance,
        type=fixed_type,
        type_header=type_header,
        type_field=type_field,
        id_header=id_header,
        id_field=id_field,
        subject_field=_path(options, "subject_field"),
    )


def _bad(key: str, detail: str) -> InvalidArgumentError:
    return InvalidArgumentError.for_field(f"options.{key}", detail)


def _text(options: Mapping[str, object], key: str, default: str | None) -> str | None:
    value = options.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _bad(key, "must be a string")
    if len(value) > 256 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _bad(key, "at most 256 characters, no control characters")
    return value


def _header_name(options: Mapping[str, object], key: str) -> str | None:
    value = _text(options, key, None)
    if value is not None and not _HEADER_NAME.fullmatch(value):
        raise _bad(key, "must be an HTTP header name (letters, digits and -, e.g. X-Signature)")
    return value


def _choice(options: Mapping[str, object], key: str, choices: tuple[str, ...], default: str) -> str:
    value = (_text(options, key, default) or default).lower()
    if value not in choices:
        raise _bad(key, f"one of {', '.join(choices)}")
    return value


def _path(options: Mapping[str, object], key: str) -> tuple[str, ...] | None:
    value = _text(options, key, None)
    if value is None:
        return None
    segments = tuple(value.removeprefix("/").replace("/", ".").split("."))
    if not all(segments):
        raise _bad(key, "a dotted path into the JSON body, e.g. data.object.id (list items by index: items.0.id)")
    return segments


def _template(signed: str) -> tuple[tuple[str, str | None], ...]:
    try:
        parsed = list(string.Formatter().parse(signed))
    except ValueError as exc:
        raise _bad("signed", f"not a template ({exc}); write literal braces as {{{{ and }}}}") from None
    pieces: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (name not in _PLACEHOLDERS or spec or conversion):
            raise _bad("signed", "may use only {body} and {timestamp}, e.g. {timestamp}.{body}")
        pieces.append((literal, name))
    if not any(name == "body" for _, name in pieces):
        raise _bad("signed", "must include {body}: a signature that does not cover the body proves nothing")
    return tuple(pieces)


def _tolerance(options: Mapping[str, object], timestamp_header: str | None) -> int | None:
    value = options.get("tolerance")
    if value is None:
        return DEFAULT_TOLERANCE if timestamp_header is not None else None
    if timestamp_header is None:
        raise _bad("tolerance", "applies only with timestamp_header")
    seconds: object = value
    if isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())  # `--option tolerance=300` gives a string
    elif isinstance(value, float) and value.is_integer():
        seconds = int(value)  # a protobuf Struct carries every number as a double
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= MAX_TOLERANCE:
        raise _bad("tolerance", f"whole seconds, 1 to {MAX_TOLERANCE}")
    return seconds

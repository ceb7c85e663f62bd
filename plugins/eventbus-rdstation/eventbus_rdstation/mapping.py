"""The `mapping` option: which RD event an eventbus event becomes, and where each payload field's value comes from.

A value spec is a path into the event (`"$.data.customer.email"`, `"$.subject"`, `"$.data.items.0.sku"`), a
constant (`"site"`, `199.9`, `true`, `{"const": <any JSON>}`; `"$$..."` is the literal text `"$..."`), or a
list of specs (`["site", "$.data.channel"]`, where a path to a list adds its items). `Mapping.parse` checks it
all when the subscription is saved; `Mapping.build(event)` makes the RD payload, or a `MappingError` when the
event can never map.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from eventbus.errors import InvalidArgumentError
from eventbus.model import DataKind, Event, format_rfc3339

__all__ = [
    "CONVERSION_FIELDS",
    "EVENT_TYPES",
    "REQUIRED_FIELDS",
    "ROOTS",
    "Constant",
    "Mapping",
    "MappingError",
    "Path",
    "Spec",
    "Spread",
]

EVENT_TYPES: Final = ("CONVERSION", "OPPORTUNITY", "OPPORTUNITY_LOST", "SALE", "ORDER_PLACED", "ORDER_PLACED_ITEM")
CONVERSION_FIELDS: Final = frozenset(
    {
        "conversion_identifier",
        "email",
        "name",
        "job_title",
        "state",
        "city",
        "country",
        "personal_phone",
        "mobile_phone",
        "twitter",
        "facebook",
        "linkedin",
        "website",
        "company_name",
        "company_site",
        "company_address",
        "client_tracking_id",
        "traffic_source",
        "traffic_medium",
        "traffic_campaign",
        "traffic_value",
        "tags",
        "available_for_mailing",
        "legal_bases",
    }
)
# What RD requires of each type (specs.md §3.2); a mapping must give these and an event must carry them.
REQUIRED_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "CONVERSION": ("conversion_identifier", "email"),
    "OPPORTUNITY": ("email",),
    "OPPORTUNITY_LOST": ("email",),
    "SALE": ("email",),
}
_FUNNEL_TYPES: Final = frozenset({"OPPORTUNITY", "OPPORTUNITY_LOST", "SALE"})
DEFAULT_FUNNEL: Final = "default"
# The same roots as content filters (DESIGN.md §2): CloudEvents attributes, `ext.<name>` and `data`.
ROOTS: Final = frozenset({"id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "ext", "data"})
_ROOTS_TEXT: Final = ", ".join(sorted(ROOTS))
_EVENT_TYPE: Final = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_FIELD: Final = re.compile(r"[a-z][a-z0-9_]{0,99}")
_CUSTOM_FIELD: Final = re.compile(r"cf_[A-Za-z0-9_]{1,97}")
_LEGAL_BASIS_KEYS: Final = ("category", "type", "status")
_MAX_FIELDS: Final = 100
_MAX_PATH: Final = 500


@dataclass(frozen=True, slots=True)
class Path:
    """`$.<root>.<key or index>...`; absent as soon as a step is missing.

    `indices` holds, for each step of ASCII digits, the list index it also stands for (None for other steps).
    """

    text: str
    steps: tuple[str, ...]
    indices: tuple[int | None, ...]

    def normalised(self) -> object:
        return self.text


@dataclass(frozen=True, slots=True)
class Constant:
    value: object

    def normalised(self) -> object:
        if isinstance(self.value, str):
            return "$" + self.value if self.value.startswith("$") else self.value
        if isinstance(self.value, bool | int | float):
            return self.value
        return {"const": self.value}


@dataclass(frozen=True, slots=True)
class Spread:
    """A list built item by item; items whose path is absent are left out, and a path to a list adds its items."""

    items: tuple[Path | Constant, ...]

    def normalised(self) -> object:
        return [item.normalised() for item in self.items]


Spec = Path | Constant | Spread
_ABSENT: Final = object()


@dataclass(frozen=True, slots=True)
class MappingError:
    """Why this event cannot become an RD event (the delivery is rejected: no retry would change the event)."""

    field: str
    path: str | None
    problem: str

    @property
    def reason(self) -> str:
        where = f" (from {self.path})" if self.path else ""
        return f"payload field {self.field}{where}: {self.problem}"


@dataclass(frozen=True, slots=True)
class Mapping:
    event_type: str
    fields: tuple[tuple[str, Spec], ...]
    optional: frozenset[str]

    @classmethod
    def parse(cls, value: object, field: str = "options.mapping") -> Mapping:
        """Check a mapping option (an object, or its JSON text); errors name `field.<path>`."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise InvalidArgumentError.for_field(field, f"not a JSON object: {exc}") from None
        if not isinstance(value, AnyMapping):
            raise InvalidArgumentError.for_field(field, 'an object: {"event_type": ..., "payload": {...}}')
        for key in value:
            if key not in ("event_type", "payload", "optional"):
                known = "unknown key; known: event_type, payload, optional"
                raise InvalidArgumentError.for_field(f"{field}.{key}", known)
        event_type = value.get("event_type", "CONVERSION")
        if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
            raise InvalidArgumentError.for_field(
                f"{field}.event_type", f"an RD event type in capitals, e.g. {', '.join(EVENT_TYPES)}"
            )
        payload = value.get("payload")
        if not isinstance(payload, AnyMapping) or not payload:
            raise InvalidArgumentError.for_field(
                f"{field}.payload", 'required: an object from RD field names to values, e.g. {"email": "$.data.email"}'
            )
        if len(payload) > _MAX_FIELDS:
            raise InvalidArgumentError.for_field(f"{field}.payload", f"at most {_MAX_FIELDS} fields")
        fields: dict[str, Spec] = {}
        for name, spec in payload.items():
            where = f"{field}.payload.{name}"
            _check_field_name(event_type, str(name), where)
            fields[name] = _check_field_value(str(name), _parse_spec(spec, where), where)
        required = REQUIRED_FIELDS.get(event_type, ())
        for name in required:
            if name not in fields:
                why = f"required by RD for {event_type} events"
                raise InvalidArgumentError.for_field(f"{field}.payload.{name}", why)
        if event_type in _FUNNEL_TYPES and "funnel_name" not in fields:
            fields["funnel_name"] = Constant(DEFAULT_FUNNEL)
        optional = _parse_optional(value.get("optional", []), fields, required, f"{field}.optional")
        return cls(event_type, tuple(fields.items()), optional)

    def options(self) -> dict[str, object]:
        """The normalised option value: `Mapping.parse(m.options())` gives `m` again."""
        result: dict[str, object] = {
            "event_type": self.event_type,
            "payload": {name: spec.normalised() for name, spec in self.fields},
        }
        if self.optional:
            result["optional"] = sorted(self.optional)
        return result

    @property
    def required(self) -> tuple[str, ...]:
        return REQUIRED_FIELDS.get(self.event_type, ())

    def build(self, event: Event) -> dict[str, object] | MappingError:
        """The RD `payload` for `event`. A field whose path is absent (or null) is left out when it is listed in
        `optional`; otherwise the event cannot map and the answer is a `MappingError` naming field and path."""
        document = _EventDocument(event)
        payload: dict[str, object] = {}
        for name, spec in self.fields:
            value = _evaluate(spec, document)
            path = spec.text if isinstance(spec, Path) else None
            if value is _ABSENT or value is None or (value == "" and name in self.required):
                if name in self.optional:
                    continue
                problem = "is empty" if value == "" else "is absent in the event"
                if name in self.required:
                    return MappingError(name, path, f"{problem}, and RD requires it for {self.event_type}")
                return MappingError(name, path, f"{problem}; list it in mapping.optional to send the event without it")
            if name == "email" and not _looks_like_email(value):
                return MappingError(name, path, f"{_excerpt(value)} is not an email address")
            if name == "tags" and isinstance(value, str):
                value = [value]
            payload[name] = value
        return payload


def _check_field_name(event_type: str, name: str, where: str) -> None:
    if event_type == "CONVERSION":
        if name not in CONVERSION_FIELDS and not _CUSTOM_FIELD.fullmatch(name):
            known = ", ".join(sorted(CONVERSION_FIELDS))
            raise InvalidArgumentError.for_field(
                where, f"not a CONVERSION field; known: {known}, and cf_<identifier> custom fields"
            )
    elif not _FIELD.fullmatch(name) and not _CUSTOM_FIELD.fullmatch(name):
        raise InvalidArgumentError.for_field(where, "an RD payload field name in snake_case ([a-z][a-z0-9_]*)")


def _check_field_value(name: str, spec: Spec, where: str) -> Spec:
    if not isinstance(spec, Constant):
        if name == "legal_bases" and isinstance(spec, Spread):
            raise InvalidArgumentError.for_field(where, 'a path or {"const": [{"category", "type", "status"}, ...]}')
        return spec
    value = spec.value
    if name == "tags" and not (isinstance(value, list) and all(isinstance(tag, str) for tag in value)):
        raise InvalidArgumentError.for_field(where, 'a list of strings (["site", ...]), or a path')
    if name == "legal_bases" and not _legal_bases(value):
        raise InvalidArgumentError.for_field(
            where,
            'a list of {"category", "type", "status"} objects, e.g. '
            '{"const": [{"category": "communications", "type": "consent", "status": "granted"}]}, or a path',
        )
    if name == "email" and not _looks_like_email(value):
        raise InvalidArgumentError.for_field(where, f"{_excerpt(value)} is not an email address")
    return spec


def _legal_bases(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict) and all(isinstance(item.get(key), str) for key in _LEGAL_BASIS_KEYS) for item in value
    )


def _parse_spec(spec: object, where: str) -> Spec:
    if isinstance(spec, list):
        if not spec:
            return Constant([])
        items = [_parse_item(item, f"{where}[{index}]") for index, item in enumerate(spec)]
        return Spread(tuple(items)) if any(isinstance(item, Path) for item in items) else Constant(_values(items))
    return _parse_item(spec, where)


def _values(items: list[Path | Constant]) -> list[object]:
    return [item.value for item in items if isinstance(item, Constant)]


def _parse_item(spec: object, where: str) -> Path | Constant:
    if isinstance(spec, AnyMapping):
        if set(spec) != {"const"}:
            raise InvalidArgumentError.for_field(where, 'an object value spec is {"const": <any JSON value>}')
        if spec["const"] is None:
            raise InvalidArgumentError.for_field(where, "a constant cannot be null: leave the field out instead")
        _check_finite(spec["const"], where)
        return Constant(spec["const"])
    if isinstance(spec, str):
        if spec.startswith("$$"):
            return Constant(spec[1:])
        if spec.startswith("$"):
            return _parse_path(spec, where)
        return Constant(spec)
    if isinstance(spec, bool | int | float):
        _check_finite(spec, where)
        return Constant(spec)
    if spec is None:
        raise InvalidArgumentError.for_field(where, "null is not a value: leave the field out instead")
    raise InvalidArgumentError.for_field(where, 'a path ("$.data.email"), a constant, or {"const": ...}')


def _check_finite(value: object, where: str) -> None:
    """NaN and the infinities are not JSON (Python's json module reads and writes them anyway): refused."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError.for_field(
            where, f"{value} is not a JSON number: a constant must be finite (RD cannot receive NaN or infinities)"
        )
    if isinstance(value, AnyMapping):
        for item in value.values():
            _check_finite(item, where)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_finite(item, where)


def _parse_path(text: str, where: str) -> Path:
    example = "e.g. $.data.customer.email, $.subject or $.data.items.0.sku"
    if not text.startswith("$.") or len(text) > _MAX_PATH:
        raise InvalidArgumentError.for_field(
            where, f"a path starts with `$.` ({example}); write a literal leading $ as $$"
        )
    steps = tuple(text[2:].split("."))
    if not all(steps):
        raise InvalidArgumentError.for_field(where, f"path `{text}` has an empty segment ({example})")
    root = steps[0]
    if root not in ROOTS:
        raise InvalidArgumentError.for_field(where, f"path `{text}` starts at `{root}`; a path starts at {_ROOTS_TEXT}")
    if root == "ext" and len(steps) != 2:
        raise InvalidArgumentError.for_field(where, f"path `{text}`: an extension is `$.ext.<name>`")
    if root not in ("data", "ext") and len(steps) > 1:
        raise InvalidArgumentError.for_field(where, f"path `{text}`: `{root}` is a single value with no sub-fields")
    return Path(text, steps, tuple(_index(step) for step in steps))


def _index(step: str) -> int | None:
    """The list index a step stands for: ASCII digits only (`"²".isdigit()` is true, but `int("²")` raises)."""
    return int(step) if step.isascii() and step.isdigit() else None


def _parse_optional(value: object, fields: dict[str, Spec], required: tuple[str, ...], where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise InvalidArgumentError.for_field(where, "a list of payload field names that may be absent in an event")
    for index, name in enumerate(value):
        if name in required:
            why = f"{name} is required by RD: it cannot be optional"
            raise InvalidArgumentError.for_field(f"{where}[{index}]", why)
        if name not in fields:
            raise InvalidArgumentError.for_field(f"{where}[{index}]", f"{name} is not a field of mapping.payload")
    return frozenset(value)


class _EventDocument:
    """The event as paths see it; `data` is parsed once, and only when a path asks for it."""

    def __init__(self, event: Event) -> None:
        self._event = event
        self._data: object = None
        self._data_read = False

    def root(self, name: str) -> object:
        event = self._event
        if name == "data":
            return self._parsed_data()
        if name == "ext":
            return event.extensions
        value = getattr(event, name)
        if isinstance(value, datetime):
            return format_rfc3339(value)
        return _ABSENT if value is None else value

    def _parsed_data(self) -> object:
        if not self._data_read:
            self._data_read = True
            self._data = _ABSENT
            event = self._event
            if event.data is not None and event.has_json_data:
                try:
                    self._data = event.json_data()
                except (ValueError, RecursionError):
                    self._data = _ABSENT
            elif event.data is not None and event.data_kind is DataKind.TEXT:
                self._data = event.data.decode("utf-8", "replace")
        return self._data


def _evaluate(spec: Spec, document: _EventDocument) -> object:
    if isinstance(spec, Constant):
        return spec.value
    if isinstance(spec, Spread):
        values: list[object] = []
        for item in spec.items:
            value = _evaluate(item, document)
            if isinstance(item, Path) and isinstance(value, list):
                values.extend(value)  # a path to a list adds its items (one level)
            else:
                values.append(value)
        return [value for value in values if value is not _ABSENT and value is not None]
    value = document.root(spec.steps[0])
    for step, index in zip(spec.steps[1:], spec.indices[1:], strict=True):
        if isinstance(value, AnyMapping):
            value = value.get(step, _ABSENT)
        elif isinstance(value, list) and index is not None and index < len(value):
            value = value[index]
        else:
            return _ABSENT
    if isinstance(value, bytes):  # a binary extension attribute
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return format_rfc3339(value)
    return value


def _looks_like_email(value: object) -> bool:
    if not isinstance(value, str) or value.count("@") != 1 or len(value) > 254:
        return False
    local, _, domain = value.partition("@")
    return bool(local) and bool(domain) and not any(ch.isspace() or ord(ch) < 32 for ch in value)


def _excerpt(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:79] + "…"

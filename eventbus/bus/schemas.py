"""JSON Schemas of event types (draft 2020-12): checking a schema before it is registered, and the per-process
cache of compiled validators that the publish path checks events against.

Safe to run on the publish path: no schema can fetch anything (remote `$ref`s are refused when the schema is set,
and the registry retrieves nothing), and `pattern` / `patternProperties` run on RE2, in time linear in the input,
so a backtracking pattern such as `^(a+)+$` cannot stall the bus.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import re2
import structlog
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema_specifications import REGISTRY as SPECIFICATIONS  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from eventbus.errors import InvalidArgumentError, SchemaValidationError
from eventbus.model import DataKind, Event
from eventbus.patterns import is_system_type
from eventbus.store.types import EventTypeStore

log = structlog.get_logger("eventbus.schemas")

MAX_SCHEMA_BYTES = 64 * 1024
REFRESH_EVERY = 1.0  # seconds: another process may change a schema; this process's own changes apply at once
DIALECTS: Final = frozenset(
    {"https://json-schema.org/draft/2020-12/schema", "https://json-schema.org/draft/2020-12/schema#"}
)
_MAX_DETAIL = 400
_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.log_errors = False


def _refuse_retrieval(uri: str) -> Resource[Any]:
    raise LookupError(f"{uri} is not fetched: schemas are self-contained")


# The metaschemas are known (a schema may `$ref` them); anything else not inside the schema itself is refused.
REGISTRY: Final[Registry[Any]] = SPECIFICATIONS.combine(Registry(retrieve=_refuse_retrieval))  # type: ignore[call-arg]


# -- RE2 keywords ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _regex(pattern: str) -> Any:
    return re2.compile(pattern, options=_RE2_OPTIONS)


def _matches(pattern: str, text: str) -> bool:
    return _regex(pattern).search(text) is not None


def _pattern(validator: Any, pattern: str, instance: object, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _matches(pattern, str(instance)):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: object, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    assert isinstance(instance, Mapping)
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _matches(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: object, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """jsonschema's own, with the `patternProperties` test on RE2."""
    if not validator.is_type(instance, "object"):
        return
    assert isinstance(instance, Mapping)
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = sorted(key for key in instance if key not in properties and not any(_matches(p, key) for p in patterns))
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(extra) for extra in extras)
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            yield ValidationError(f"{listed} {verb} not match any of the regexes: {', '.join(map(repr, patterns))}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({listed} {verb} unexpected)")


def _canonical(value: object) -> object:
    """A hashable form in which two JSON values are equal as JSON Schema compares them (1 == 1.0, true != 1)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", int(value) if isinstance(value, float) and value.is_integer() else value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))
    return ("other", repr(value))


def _unique_items(
    validator: Any, unique: object, instance: object, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """`uniqueItems` in linear time (the stock check compares objects pairwise: minutes on a 40 KB array)."""
    if not unique or not isinstance(instance, list):
        return
    seen: set[object] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"{_clip(repr(instance))} has non-unique elements")
            return
        seen.add(key)


Validator: Final[type[Draft202012Validator]] = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "uniqueItems": _unique_items,
    },
)


# -- checking a schema before it is registered -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    text: str  # the schema as registered: compact JSON
    validator: Draft202012Validator


def _refuse(detail: str) -> InvalidArgumentError:
    return InvalidArgumentError.for_field("schema", detail)


def _walk(resource: Resource[Any], registry: Registry[Any], base: str) -> None:
    """Every subschema, each with its base URI: each `$ref` must resolve inside the schema, each regex in RE2."""
    unevaluated = patterned = False
    resolver = registry.resolver(base_uri=base)
    pending = [(resolver, resource)]
    while pending:
        resolver, current = pending.pop()
        contents = current.contents
        if isinstance(contents, Mapping):
            for keyword in ("$ref", "$dynamicRef"):
                ref = contents.get(keyword)
                if isinstance(ref, str):
                    try:
                        resolver.lookup(ref)
                    except Unresolvable:
                        if ref.startswith("#"):
                            raise _refuse(f"{keyword} {ref!r} points at nothing in the schema") from None
                        raise _refuse(
                            f"{keyword} {ref!r} does not resolve inside the schema: remote references are never "
                            "fetched; put the referenced schema under $defs"
                        ) from None
            regexes = list(contents.get("patternProperties", {}) or {})
            if isinstance(contents.get("pattern"), str):
                regexes.append(contents["pattern"])
            for regex in regexes:
                try:
                    _regex(regex)
                except re2.error as error:
                    reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else str(error)
                    raise _refuse(f"pattern {regex!r} does not compile in RE2 syntax: {reason}") from None
            patterned = patterned or "patternProperties" in contents
            unevaluated = unevaluated or "unevaluatedProperties" in contents
        pending.extend((resolver.in_subresource(sub), sub) for sub in current.subresources())
    if unevaluated and patterned:
        # jsonschema evaluates `unevaluatedProperties` with Python's backtracking regexes: not on the publish path.
        raise _refuse("unevaluatedProperties together with patternProperties is not supported")


def compile_schema(value: object) -> CompiledSchema:
    """Check a schema (JSON text, an object or a boolean) and compile it; errors name the field `schema`."""
    if isinstance(value, str):
        if len(value.encode()) > MAX_SCHEMA_BYTES:
            raise _refuse(f"{len(value.encode())} bytes; at most {MAX_SCHEMA_BYTES}")
        try:
            value = json.loads(value)
        except RecursionError:
            raise _refuse("nested too deeply") from None
        except ValueError as exc:
            raise _refuse(f"not valid JSON: {exc}") from None
    if not isinstance(value, Mapping | bool):
        raise _refuse("a JSON Schema is an object (or true / false)")
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        text.encode()
    except UnicodeEncodeError:
        raise _refuse("a string holds a lone surrogate (not a Unicode character)") from None
    except (TypeError, ValueError) as exc:
        raise _refuse(f"not JSON: {exc}") from None
    except RecursionError:
        raise _refuse("nested too deeply") from None
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise _refuse(f"{len(text.encode())} bytes; at most {MAX_SCHEMA_BYTES}")
    dialect = value.get("$schema") if isinstance(value, Mapping) else None
    if dialect is not None and (not isinstance(dialect, str) or dialect not in DIALECTS):
        raise _refuse(f"$schema {dialect!r}: only draft 2020-12 schemas are supported")
    try:
        Draft202012Validator.check_schema(value)
        resource = DRAFT202012.create_resource(value)
        base = resource.id() or ""
        _walk(resource, REGISTRY.with_resource(base, resource).crawl(), base)
    except SchemaError as exc:
        raise _refuse(f"{exc.json_path}: {_clip(exc.message)}") from None
    except RecursionError:
        raise _refuse("nested too deeply") from None
    return CompiledSchema(text, Validator(value, registry=REGISTRY))


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


# -- checking events ---------------------------------------------------------------------------------------------


class _NotJson:
    """Data a JSON Schema cannot describe: binary bytes, or bytes labelled JSON that do not parse."""


NOT_JSON: Final = _NotJson()


def instance_of(event: Event) -> object:
    """What a schema validates: the JSON data; text data as a JSON string; no data as `null`."""
    if event.data is None:
        return None
    if event.has_json_data:
        try:
            return json.loads(event.data)
        except (ValueError, RecursionError):
            return NOT_JSON
    if event.data_kind is DataKind.TEXT:
        return event.data.decode("utf-8", "replace")
    return NOT_JSON


def check_event(event: Event, schema: CompiledSchema, field: str) -> None:
    """Raise `SchemaValidationError` naming `field` unless the event's data validates."""
    instance = instance_of(event)
    if instance is NOT_JSON:
        kind = f"{event.datacontenttype} data" if event.datacontenttype else "binary data"
        raise SchemaValidationError.for_field(
            field, f"type {event.type} has a JSON Schema, so its data must be JSON; this is {kind} that is not JSON"
        )
    try:
        error = best_match(schema.validator.iter_errors(instance))
    except RecursionError:
        raise SchemaValidationError.for_field(field, "nested too deeply to validate") from None
    except Unresolvable as exc:  # only a schema stored by other means can get here: refused when set
        raise SchemaValidationError.for_field(field, f"the schema of {event.type} cannot be applied: {exc}") from None
    if error is not None:
        where = "/".join(str(part) for part in error.schema_path)
        raise SchemaValidationError.for_field(
            field, f"{error.json_path}: {_clip(error.message)} (schema of {event.type} at #/{where})"
        )


# -- the cache ---------------------------------------------------------------------------------------------------


class SchemaCache:
    """The compiled validators of every registered schema, in this process.

    Reloaded when this process changes a schema (`invalidate`) and at least every second otherwise (another
    process on the same PostgreSQL database may change one); a schema whose text did not change keeps its
    compiled validator. With no store support (`store` None) nothing is ever validated.
    """

    def __init__(self, store: EventTypeStore | None, *, refresh_every: float = REFRESH_EVERY) -> None:
        self._store = store
        self._refresh_every = refresh_every
        self._schemas: dict[str, CompiledSchema] = {}
        self._loaded_at: float | None = None
        self._generation = 0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._generation += 1
        self._loaded_at = None

    def _fresh(self) -> bool:
        return self._loaded_at is not None and time.monotonic() - self._loaded_at < self._refresh_every

    async def schemas(self) -> dict[str, CompiledSchema]:
        """Type → compiled schema, current to within `refresh_every` (to now for this process's changes)."""
        if self._store is None or self._fresh():
            return self._schemas
        async with self._lock:
            if self._fresh():
                return self._schemas
            generation, started = self._generation, time.monotonic()
            loaded: dict[str, CompiledSchema] = {}
            for registered in await self._store.event_schemas():
                known = self._schemas.get(registered.type)
                if known is not None and known.text == registered.schema:
                    loaded[registered.type] = known
                    continue
                try:
                    loaded[registered.type] = CompiledSchema(
                        registered.schema, Validator(json.loads(registered.schema), registry=REGISTRY)
                    )
                except (ValueError, RecursionError) as exc:
                    log.error("event_schema_unusable", type=registered.type, error=str(exc))
            self._schemas = loaded
            if generation == self._generation:  # a change made during the load is read again next time
                self._loaded_at = started
            return loaded

    async def check(self, events: Sequence[Event], *, field: str = "events") -> None:
        """Validate each event whose type has a schema (system events never do); the first failure is raised,
        naming `events[i].data`."""
        schemas = await self.schemas()
        if not schemas:
            return
        checks = [
            (event, schemas[event.type], f"{field}[{index}].data")
            for index, event in enumerate(events)
            if event.type in schemas and not is_system_type(event.type)
        ]
        if not checks:
            return
        # Off the event loop: how long a schema takes depends on the schema and the data, not only on the size.
        await asyncio.to_thread(_check_all, checks)


def _check_all(checks: Sequence[tuple[Event, CompiledSchema, str]]) -> None:
    for event, schema, field in checks:
        check_event(event, schema, field)

"""The TOML config file: read, checked key by key (every error at once, each naming its path), `env:` resolved.

What the file can hold is in docs/config.md. Sources and subscriptions declared here are values only: they are
created, changed and removed by `eventbus.configuration.declared` through the service layer, whose rules (kind
options, connector options, limits) apply to them at start-up exactly as to an API call.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

from eventbus.auth import ApiKey, Scope
from eventbus.configuration.values import BY_PATH, SECTIONS, SPECIAL_KEYS, parse_bool, parse_duration, parse_schedule
from eventbus.errors import FieldViolation, InvalidArgumentError
from eventbus.filters import ContentFilter
from eventbus.patterns import PatternSet
from eventbus.signing import parse_secret

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Keys whose values are credentials (or may hold one: headers, options, a store URL's password): an error about
# them says what the value is like, never the value (errors go to stderr and to the reload log line).
_SECRET_PATH = re.compile(r"(^|\.)(secrets?|headers|options|api_keys|url)(\b|\[|$)")


def shown(value: object, path: str) -> str:
    """`value` for an error message: its repr, or for a secret-bearing key only its type and length."""
    if not _SECRET_PATH.search(path):
        return repr(value)
    if isinstance(value, str | list | dict | tuple):
        return f"(a {type(value).__name__} of length {len(value)})"
    return f"(a {type(value).__name__})"


ENV_PREFIX = "env:"
SOURCE_KEYS = ("name", "connector", "secrets", "options", "enabled", "rate_limit")
WEBHOOK_KEYS = ("url", "secret", "format", "headers", "timeout")  # a webhook's options, written at the top level
SUBSCRIPTION_KEYS = (
    "name",
    "kind",
    *WEBHOOK_KEYS,
    "options",
    "patterns",
    "filter",
    "retry_schedule",
    "max_pending_age",
    "rate_limit",
    "max_concurrency",
    "ordering",
    "paused",
)
API_KEY_KEYS = ("id", "hash", "scopes")


def _digest(value: object) -> str:
    """A fingerprint of a declaration: when it is the one last applied, the resource is left alone."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class DeclaredSource:
    """A source the file declares; its name is its identity (and its URL path, `/hooks/<name>`)."""

    name: str
    connector: str
    secrets: tuple[str, ...]
    options: dict[str, object] = field(default_factory=dict)
    enabled: bool = True
    rate_limit: float | None = None
    path: str = ""  # `sources[i]`, for messages

    @property
    def digest(self) -> str:
        return _digest({k: v for k, v in asdict(self).items() if k != "path"})


@dataclass(frozen=True, slots=True)
class DeclaredSubscription:
    """A push subscription the file declares, by a name that stays its identity across restarts."""

    name: str
    kind: str
    options: dict[str, object]  # a webhook's url, secret, format, headers and timeout included
    patterns: tuple[str, ...] = ("**",)
    filter: str | None = None  # JSON text
    retry_schedule: tuple[timedelta, ...] | None = None  # None: the server's default when applied
    max_pending_age: timedelta | None = None
    rate_limit: float | None = None
    max_concurrency: int | None = None
    ordering: str = "none"
    paused: bool = False
    path: str = ""

    @property
    def digest(self) -> str:
        return _digest({k: v for k, v in asdict(self).items() if k != "path"})


@dataclass(frozen=True, slots=True)
class Declarations:
    sources: tuple[DeclaredSource, ...] = ()
    subscriptions: tuple[DeclaredSubscription, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigFile:
    path: str
    values: dict[str, object]  # parsed settings by `ServerSettings` attribute
    api_keys: tuple[ApiKey, ...] = ()
    declarations: Declarations = field(default_factory=Declarations)


class ConfigFileError(InvalidArgumentError):
    """The file was refused: every problem found, one per line, each naming its key's path."""

    def __init__(self, path: str, violations: list[FieldViolation]) -> None:
        lines = "\n".join(f"  {v.field}: {v.detail}" for v in violations)
        count = f"{len(violations)} error" + ("s" if len(violations) != 1 else "")
        super().__init__(f"config file {path}: {count}:\n{lines}", violations=violations)
        self.errors = [f"{v.field}: {v.detail}" for v in violations]


class _Reader:
    """Walks the parsed TOML, collecting every violation instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.violations: list[FieldViolation] = []

    def fail(self, path: str, detail: str) -> None:
        self.violations.append(FieldViolation(path, detail))

    def failed(self, exc: InvalidArgumentError, path: str) -> None:
        self.violations += exc.violations or [FieldViolation(path, exc.message)]

    def table(self, value: object, path: str, known: tuple[str, ...]) -> dict[str, object] | None:
        if not isinstance(value, dict):
            self.fail(path, f"must be a table, got {type(value).__name__}")
            return None
        for key in value:
            if key not in known:
                self.fail(f"{path}.{key}" if path else key, f"unknown key; known: {', '.join(known)}")
        return {k: v for k, v in value.items() if k in known}

    def resolve(self, value: object, path: str) -> object:
        """`env:NAME` becomes the variable's value (strings at any depth of lists and tables)."""
        if isinstance(value, str) and value.startswith(ENV_PREFIX):
            name = value[len(ENV_PREFIX) :]
            if not _ENV_NAME.match(name):
                self.fail(path, f"{shown(value, path)}: env: must be followed by a variable name")
                return None
            if name not in self.env:
                self.fail(path, f"environment variable {name} is not set")
                return None
            return self.env[name]
        if isinstance(value, dict):
            return {k: self.resolve(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    def string(self, value: object, path: str, *, required: bool = False) -> str | None:
        if value is None:
            if required:
                self.fail(path, "required")
            return None
        if not isinstance(value, str) or not value:
            self.fail(path, f"{shown(value, path)}: a non-empty string")
            return None
        return value

    def name(self, value: object, path: str, seen: dict[str, str]) -> str | None:
        text = self.string(value, path, required=True)
        if text is None:
            return None
        if not _NAME.match(text):
            self.fail(path, f"{text!r}: 1-63 characters of [a-z0-9_-], starting with a letter or digit")
            return None
        if text in seen:
            self.fail(path, f"{text!r} is declared twice (also {seen[text]})")
            return None
        seen[text] = path.rsplit(".", 1)[0]
        return text

    def number(self, value: object, path: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            self.fail(path, f"{value!r}: a number, 0 or more")
            return None
        return float(value)

    def parsed(self, parse: object, value: object, path: str) -> object:
        try:
            return parse(value, path)  # type: ignore[operator]
        except InvalidArgumentError as exc:
            self.failed(exc, path)
            return None


def load_config_file(path: str, env: Mapping[str, str]) -> ConfigFile:
    """Read and check `path`; `ConfigFileError` lists every problem (a missing file and bad TOML included)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(path, [FieldViolation("config", f"cannot read {path}: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigFileError(path, [FieldViolation("config", f"{path} is not UTF-8 text: {exc}")]) from exc
    return parse_config(text, path, env)


def parse_config(text: str, path: str, env: Mapping[str, str]) -> ConfigFile:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(path, [FieldViolation("config", f"not valid TOML: {exc}")]) from exc
    reader = _Reader(env)
    values: dict[str, object] = {}
    api_keys: tuple[ApiKey, ...] = ()
    sources: list[DeclaredSource] = []
    subscriptions: list[DeclaredSubscription] = []
    for section, body in document.items():
        if section == "sources":
            sources = _sources(reader, body)
        elif section == "subscriptions":
            subscriptions = _subscriptions(reader, body)
        elif section in SECTIONS:
            known = tuple(p.split(".", 1)[1] for p in BY_PATH if p.startswith(f"{section}."))
            table = reader.table(body, section, (*known, *SPECIAL_KEYS.get(section, ())))
            for key, value in (table or {}).items():
                key_path = f"{section}.{key}"
                if key_path == "security.api_keys":
                    api_keys = _api_keys(reader, value, key_path)
                    continue
                setting = BY_PATH[key_path]
                resolved = reader.resolve(value, key_path) if key_path == "store.url" else value
                if resolved is not None:
                    parsed = reader.parsed(setting.parse, resolved, key_path)
                    if parsed is not None:
                        values[setting.name] = parsed
        else:
            known_sections = ", ".join([*SECTIONS, "sources", "subscriptions"])
            reader.fail(section, f"unknown section; known: {known_sections}")
    if reader.violations:
        raise ConfigFileError(path, reader.violations)
    return ConfigFile(path, values, api_keys, Declarations(tuple(sources), tuple(subscriptions)))


def _api_keys(reader: _Reader, value: object, path: str) -> tuple[ApiKey, ...]:
    if not isinstance(value, list):
        reader.fail(path, "must be an array of tables: [[security.api_keys]] or api_keys = [{id, hash, scopes}]")
        return ()
    keys: list[ApiKey] = []
    seen: dict[str, str] = {}
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        table = reader.table(item, item_path, API_KEY_KEYS)
        if table is None:
            continue
        name = reader.name(table.get("id"), f"{item_path}.id", seen)
        digest = reader.string(table.get("hash"), f"{item_path}.hash", required=True)
        if digest is not None and not _DIGEST.match(digest):
            reader.fail(f"{item_path}.hash", "sha256:<64 lowercase hex digits> of the whole key text")
            digest = None
        scopes = table.get("scopes")
        known = [s.value for s in Scope]
        if not isinstance(scopes, list) or not scopes or any(s not in known for s in scopes):
            reader.fail(f"{item_path}.scopes", f"{shown(scopes, path)}: a non-empty list of {', '.join(known)}")
            scopes = None
        if name is not None and digest is not None and scopes is not None:
            keys.append(ApiKey(f"key_{name}", digest, frozenset(Scope(s) for s in scopes)))
    return tuple(keys)


def _array(reader: _Reader, value: object, path: str) -> list[object]:
    if not isinstance(value, list):
        reader.fail(path, f"must be an array of tables ([[{path}]])")
        return []
    return value


def _sources(reader: _Reader, value: object) -> list[DeclaredSource]:
    declared: list[DeclaredSource] = []
    seen: dict[str, str] = {}
    for index, item in enumerate(_array(reader, value, "sources")):
        path = f"sources[{index}]"
        table = reader.table(item, path, SOURCE_KEYS)
        if table is None:
            continue
        errors = len(reader.violations)
        name = reader.name(table.get("name"), f"{path}.name", seen)
        connector = reader.string(table.get("connector"), f"{path}.connector", required=True)
        secrets = _source_secrets(reader, table.get("secrets"), f"{path}.secrets")
        options = reader.resolve(table.get("options", {}), f"{path}.options")
        if not isinstance(options, dict):
            reader.fail(f"{path}.options", "must be a table")
        enabled = reader.parsed(parse_bool, table.get("enabled", True), f"{path}.enabled")
        rate = reader.number(table.get("rate_limit"), f"{path}.rate_limit")
        if len(reader.violations) == errors and name and connector and isinstance(options, dict):
            declared.append(
                DeclaredSource(name, connector, tuple(secrets), dict(options), bool(enabled), rate or None, path)
            )
    return declared


def _source_secrets(reader: _Reader, value: object, path: str) -> list[str]:
    if value is None:
        reader.fail(path, "required: a list of 1 or 2 strings (env:NAME keeps them out of the file)")
        return []
    resolved = reader.resolve(value, path)
    if not isinstance(resolved, list) or not 1 <= len(resolved) <= 2:
        reader.fail(path, f"{shown(value, path)}: a list of 1 or 2 strings")
        return []
    for index, secret in enumerate(resolved):
        if secret is not None and (not isinstance(secret, str) or not secret):
            reader.fail(f"{path}[{index}]", f"{shown(secret, path)}: a non-empty string")
    return [s for s in resolved if isinstance(s, str)]


def _subscriptions(reader: _Reader, value: object) -> list[DeclaredSubscription]:
    declared: list[DeclaredSubscription] = []
    seen: dict[str, str] = {}
    for index, item in enumerate(_array(reader, value, "subscriptions")):
        path = f"subscriptions[{index}]"
        table = reader.table(item, path, SUBSCRIPTION_KEYS)
        if table is None:
            continue
        errors = len(reader.violations)
        subscription = _subscription(reader, table, path, seen)
        if subscription is not None and len(reader.violations) == errors:
            declared.append(subscription)
    return declared


def _subscription(
    reader: _Reader, table: dict[str, object], path: str, seen: dict[str, str]
) -> DeclaredSubscription | None:
    name = reader.name(table.get("name"), f"{path}.name", seen)
    kind = reader.string(table.get("kind", "webhook"), f"{path}.kind")
    options = reader.resolve(table.get("options", {}), f"{path}.options")
    if not isinstance(options, dict):
        reader.fail(f"{path}.options", "must be a table")
        options = {}
    for key in WEBHOOK_KEYS:
        if key not in table:
            continue
        if kind != "webhook":
            reader.fail(f"{path}.{key}", f"only for kind webhook; a {kind} subscription takes its options in options")
        elif key in options:
            reader.fail(f"{path}.{key}", f"given twice: here and as options.{key}")
        else:
            options[key] = reader.resolve(table[key], f"{path}.{key}")
    if kind == "webhook":
        for key in ("url", "secret"):  # present but None: an `env:` reference already reported
            if key not in options:
                reader.fail(f"{path}.{key}", "required for a webhook subscription")
            elif options[key] is not None and reader.string(options[key], f"{path}.{key}") and key == "secret":
                reader.parsed(parse_secret, options[key], f"{path}.secret")
    patterns_value = table.get("patterns", ["**"])
    patterns = reader.parsed(lambda v, f: PatternSet.parse(v, f), patterns_value, f"{path}.patterns")
    filter_value = table.get("filter")
    filter_json: str | None = None
    if filter_value is not None:
        parsed = reader.parsed(lambda v, f: ContentFilter.parse(v, f), filter_value, f"{path}.filter")
        filter_json = parsed.source_json if isinstance(parsed, ContentFilter) else None
    schedule = table.get("retry_schedule")
    retry = reader.parsed(parse_schedule, schedule, f"{path}.retry_schedule") if schedule is not None else None
    age_value = table.get("max_pending_age")
    age = reader.parsed(parse_duration, age_value, f"{path}.max_pending_age") if age_value is not None else None
    concurrency = table.get("max_concurrency")
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)):
        reader.fail(f"{path}.max_concurrency", f"{concurrency!r}: a whole number")
    ordering = table.get("ordering", "none")
    if ordering not in ("none", "subject"):
        reader.fail(f"{path}.ordering", f"{ordering!r}: use none or subject")
    paused = reader.parsed(parse_bool, table.get("paused", False), f"{path}.paused")
    if name is None or kind is None or not isinstance(patterns, PatternSet):
        return None
    return DeclaredSubscription(
        name=name,
        kind=kind,
        options=options,
        patterns=tuple(sorted(patterns.texts)),
        filter=filter_json,
        retry_schedule=retry if isinstance(retry, tuple) else None,
        max_pending_age=age if isinstance(age, timedelta) else None,
        rate_limit=reader.number(table.get("rate_limit"), f"{path}.rate_limit"),
        max_concurrency=concurrency if isinstance(concurrency, int) else None,
        ordering=str(ordering),
        paused=bool(paused),
        path=path,
    )

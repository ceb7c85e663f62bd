"""Rows of sources, raw requests, API keys and event types: column lists and mappers shared by every SQL backend."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eventbus.clock import from_micros, to_micros
from eventbus.model import format_rfc3339, parse_rfc3339
from eventbus.store.keys import KeyRecord
from eventbus.store.sources import IngestOutcome, RawRequest, Source, SourceSecret, StoredRequest
from eventbus.store.types import EventTypeRecord

SOURCE_COLUMNS = "id, name, connector, secrets, options, enabled, rate_limit, created_at, updated_at"
REQUEST_COLUMNS = "request_id, source_id, received_at, method, path, query, headers, body, remote, dedup_key, answer"
UPDATABLE_SOURCE_FIELDS = frozenset({"secrets", "options", "enabled", "rate_limit"})
KEY_COLUMNS = "key_id, name, digest, scopes, created_at, last_used_at, revoked_at"
TYPE_COLUMNS = "type, count, first_seen, last_seen, sample_event_id, sample, sample_omitted, schema, schema_updated_at"
# Types are ASCII ([A-Za-z0-9_-] and '.'): every type that starts with a prefix sorts below prefix + DEL.
PAST_ASCII = "\x7f"


def _moment(micros: int | None) -> datetime | None:
    return from_micros(micros) if micros is not None else None


def secrets_to_text(secrets: Sequence[SourceSecret]) -> str:
    return json.dumps(
        [{"secret": s.secret, "expires_at": format_rfc3339(s.expires_at) if s.expires_at else None} for s in secrets]
    )


def secrets_from_text(text: str) -> tuple[SourceSecret, ...]:
    return tuple(
        SourceSecret(s["secret"], parse_rfc3339(s["expires_at"]) if s.get("expires_at") else None)
        for s in json.loads(text)
    )


def source_from_row(row: Any) -> Source:
    id_, name, connector, secrets, options, enabled, rate, created, updated = row
    return Source(
        id=id_,
        name=name,
        connector=connector,
        secrets=secrets_from_text(secrets),
        options=json.loads(options),
        enabled=bool(enabled),
        rate_limit=rate,
        created_at=from_micros(created),
        updated_at=from_micros(updated),
    )


def source_column_value(name: str, value: object) -> object:
    """An updatable field's new value as its column holds it."""
    if name == "secrets":
        assert isinstance(value, tuple | list)
        return secrets_to_text(value)
    if name == "options":
        return json.dumps(value, sort_keys=True)
    if name == "enabled":
        return int(bool(value))
    return value


def outcomes_to_text(outcomes: Sequence[IngestOutcome]) -> str:
    return json.dumps([[o.id, o.source, o.event_id, o.seq, o.duplicate] for o in outcomes], separators=(",", ":"))


def outcomes_from_text(text: str) -> tuple[IngestOutcome, ...]:
    """The outcomes as first answered (a redelivery gets the very same body)."""
    return tuple(IngestOutcome(i, s, e, q, bool(d)) for i, s, e, q, d in json.loads(text))


def request_values(
    request_id: str, received_at: datetime, request: RawRequest, outcomes: Sequence[IngestOutcome]
) -> tuple[object, ...]:
    """A raw request's values in `REQUEST_COLUMNS` order."""
    return (
        request_id,
        request.source_id,
        to_micros(received_at),
        request.method,
        request.path,
        json.dumps([list(p) for p in request.query]) if request.query else None,
        json.dumps([list(p) for p in request.headers]),
        request.body or None,
        request.remote,
        request.dedup_key,
        outcomes_to_text(outcomes),
    )


def request_from_row(row: Any) -> StoredRequest:
    request_id, source_id, received, method, path, query, headers, body, remote, dedup_key, answer = row
    request = RawRequest(
        source_id=source_id,
        method=method,
        path=path,
        query=tuple((k, v) for k, v in json.loads(query or "[]")),
        headers=tuple((k, v) for k, v in json.loads(headers)),
        body=bytes(body or b""),
        remote=remote,
        dedup_key=dedup_key,
    )
    return StoredRequest(request_id, from_micros(received), request, outcomes_from_text(answer))


def key_values(record: KeyRecord) -> tuple[object, ...]:
    """A key's values in `KEY_COLUMNS` order."""
    return (
        record.key_id,
        record.name,
        record.digest,
        ",".join(record.scopes),
        to_micros(record.created_at),
        to_micros(record.last_used_at) if record.last_used_at else None,
        to_micros(record.revoked_at) if record.revoked_at else None,
    )


def key_from_row(row: Any) -> KeyRecord:
    key_id, name, digest, scopes, created_at, last_used_at, revoked_at = row
    return KeyRecord(
        key_id=key_id,
        name=name,
        digest=digest,
        scopes=tuple(s for s in scopes.split(",") if s),
        created_at=from_micros(created_at),
        last_used_at=_moment(last_used_at),
        revoked_at=_moment(revoked_at),
    )


def event_type_from_row(row: Any) -> EventTypeRecord:
    type_, count, first_seen, last_seen, sample_event_id, sample, omitted, schema, schema_updated_at = row
    return EventTypeRecord(
        type=type_,
        count=count,
        first_seen=_moment(first_seen),
        last_seen=_moment(last_seen),
        sample_event_id=sample_event_id,
        sample=sample,
        sample_omitted=omitted,
        schema=schema,
        schema_updated_at=_moment(schema_updated_at),
    )

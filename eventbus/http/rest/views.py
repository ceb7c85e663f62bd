"""How the REST API shows each resource: a JSON view of a service-layer value, and the JSON Schema of that view
side by side, so the OpenAPI document describes exactly what is sent. Times are RFC 3339 strings, durations
seconds; nothing secret is shown except in `revealed` (once, on create or rotate)."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

from eventbus.bus.deliveries import Explanation
from eventbus.bus.groups import GroupInfo
from eventbus.bus.keys import KeyInfo
from eventbus.bus.sources import SourceInfo
from eventbus.bus.subscriptions import SubscriptionInfo
from eventbus.cejson import raw_request_to_json, stored_event_to_json
from eventbus.model import PublishResult, StoredEvent, format_rfc3339
from eventbus.store.base import SubscriptionStats
from eventbus.store.records import Attempt, DeliveryRecord
from eventbus.store.sources import StoredRequest

JSON = dict[str, Any]

STRING: JSON = {"type": "string"}
TIME: JSON = {"type": "string", "format": "date-time"}
MAYBE_TIME: JSON = {"type": ["string", "null"], "format": "date-time"}
MAYBE_STRING: JSON = {"type": ["string", "null"]}
INTEGER: JSON = {"type": "integer"}
NUMBER: JSON = {"type": "number"}
MAYBE_NUMBER: JSON = {"type": ["number", "null"]}
BOOLEAN: JSON = {"type": "boolean"}
ANY_OBJECT: JSON = {"type": "object"}


def obj(properties: JSON, *, optional: tuple[str, ...] = ()) -> JSON:
    """An object schema whose properties are all required, except `optional` ones."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
    }


def page_of(item: JSON) -> JSON:
    return obj({"items": {"type": "array", "items": item}, "next_page_token": STRING})


def time_or_none(moment: datetime | None) -> str | None:
    return format_rfc3339(moment) if moment is not None else None


def seconds(span: timedelta | None) -> float | None:
    return span.total_seconds() if span is not None else None


# -- subscriptions ------------------------------------------------------------------------------------------------

STATS = obj(
    {
        "pending": INTEGER,
        "leased": INTEGER,
        "succeeded": INTEGER,
        "dead": INTEGER,
        "oldest_pending_at": MAYBE_TIME,
    }
)
HEALTH = obj(
    {
        "circuit": {"type": "string", "enum": ["closed", "open"]},
        "consecutive_failures": INTEGER,
        "failing_since": MAYBE_TIME,
        "circuit_opened_at": MAYBE_TIME,
        "next_probe_at": MAYBE_TIME,
    }
)
SUBSCRIPTION = obj(
    {
        "id": STRING,
        "kind": STRING,
        "patterns": {"type": "array", "items": STRING},
        "filter": MAYBE_STRING,
        "options": ANY_OBJECT,
        "state": {"type": "string", "enum": ["active", "paused", "disabled", "deleted"]},
        "state_reason": MAYBE_STRING,
        "retry_schedule": {"type": "array", "items": NUMBER},
        "rate_limit": MAYBE_NUMBER,
        "max_concurrency": {"type": ["integer", "null"]},
        "max_pending_age": NUMBER,
        "ordering": STRING,
        "created_at": TIME,
        "updated_at": MAYBE_TIME,
        "health": HEALTH,
        "stats": STATS,
        "revealed": {"type": "object", "additionalProperties": STRING},
    }
)


def stats_view(stats: SubscriptionStats) -> JSON:
    return {
        "pending": stats.pending,
        "leased": stats.leased,
        "succeeded": stats.succeeded,
        "dead": stats.dead,
        "oldest_pending_at": time_or_none(stats.oldest_pending_at),
    }


def subscription_view(info: SubscriptionInfo) -> JSON:
    sub = info.subscription
    health = sub.health
    return {
        "id": sub.id,
        "kind": sub.kind,
        "patterns": list(sub.patterns),
        "filter": sub.filter_json,
        "options": info.options,
        "state": sub.state,
        "state_reason": sub.state_reason,
        "retry_schedule": [d.total_seconds() for d in sub.retry_schedule],
        "rate_limit": sub.rate_limit,
        "max_concurrency": sub.max_concurrency,
        "max_pending_age": sub.max_pending_age.total_seconds(),
        "ordering": str(sub.ordering),
        "created_at": format_rfc3339(sub.created_at),
        "updated_at": time_or_none(sub.updated_at),
        "health": {
            "circuit": health.circuit,
            "consecutive_failures": health.consecutive_failures,
            "failing_since": time_or_none(health.failing_since),
            "circuit_opened_at": time_or_none(health.circuit_opened_at),
            "next_probe_at": time_or_none(health.next_probe_at),
        },
        "stats": stats_view(info.stats),
        "revealed": {k: str(v) for k, v in info.revealed.items()},
    }


# -- deliveries and attempts -------------------------------------------------------------------------------------

ATTEMPT = obj(
    {
        "attempt_id": STRING,
        "number": INTEGER,
        "started_at": TIME,
        "duration_ms": NUMBER,
        "status_code": {"type": ["integer", "null"]},
        "error_class": MAYBE_STRING,
        "error": MAYBE_STRING,
        "response_headers": {"type": "array", "items": {"type": "array", "items": STRING}},
        "response_body": STRING,
        "response_body_base64": MAYBE_STRING,
        "outcome": STRING,
        "next_attempt_at": MAYBE_TIME,
        "probe": BOOLEAN,
        "manual": BOOLEAN,
    }
)
DELIVERY = obj(
    {
        "id": STRING,
        "subscription_id": STRING,
        "event_id": STRING,
        "event_seq": INTEGER,
        "state": {"type": "string", "enum": ["pending", "leased", "succeeded", "dead"]},
        "attempts": INTEGER,
        "next_attempt_at": MAYBE_TIME,
        "first_attempt_at": MAYBE_TIME,
        "last_attempt_at": MAYBE_TIME,
        "created_at": TIME,
        "finished_at": MAYBE_TIME,
        "dead_reason": MAYBE_STRING,
        "last_error": MAYBE_STRING,
        "ordering_key": MAYBE_STRING,
        "manual": BOOLEAN,
    }
)
DELIVERY_WITH_ATTEMPTS = {
    "allOf": [DELIVERY, obj({"attempt_log": {"type": "array", "items": ATTEMPT}})],
}


def attempt_view(attempt: Attempt) -> JSON:
    body = attempt.response_body
    try:
        text, raw = body.decode("utf-8"), None
    except UnicodeDecodeError:
        text, raw = "", base64.b64encode(body).decode()
    return {
        "attempt_id": attempt.attempt_id,
        "number": attempt.number,
        "started_at": format_rfc3339(attempt.started_at),
        "duration_ms": round(attempt.duration.total_seconds() * 1000, 3),
        "status_code": attempt.status_code,
        "error_class": attempt.error_class,
        "error": attempt.error,
        "response_headers": [[name, value] for name, value in attempt.response_headers],
        "response_body": text,
        "response_body_base64": raw,
        "outcome": attempt.outcome,
        "next_attempt_at": time_or_none(attempt.next_attempt_at),
        "probe": attempt.probe,
        "manual": attempt.manual,
    }


def delivery_view(record: DeliveryRecord, attempts: list[Attempt] | None = None) -> JSON:
    view: JSON = {
        "id": record.delivery_id,
        "subscription_id": record.subscription_id,
        "event_id": record.event_id,
        "event_seq": record.event_seq,
        "state": record.state,
        "attempts": record.attempts,
        "next_attempt_at": time_or_none(record.next_attempt_at),
        "first_attempt_at": time_or_none(record.first_attempt_at),
        "last_attempt_at": time_or_none(record.last_attempt_at),
        "created_at": format_rfc3339(record.created_at),
        "finished_at": time_or_none(record.finished_at),
        "dead_reason": record.dead_reason,
        "last_error": record.last_error,
        "ordering_key": record.ordering_key,
        "manual": record.manual,
    }
    if attempts is not None:
        view["attempt_log"] = [attempt_view(a) for a in attempts]
    return view


EXPLANATION = obj(
    {
        "subscription_id": STRING,
        "event_id": STRING,
        "verdict": STRING,
        "reasons": {"type": "array", "items": STRING},
        "delivery": {"oneOf": [DELIVERY, {"type": "null"}]},
        "attempt_log": {"type": "array", "items": ATTEMPT},
    }
)


def explanation_view(explanation: Explanation) -> JSON:
    return {
        "subscription_id": explanation.subscription_id,
        "event_id": explanation.event_id,
        "verdict": explanation.verdict,
        "reasons": list(explanation.reasons),
        "delivery": delivery_view(explanation.delivery) if explanation.delivery is not None else None,
        "attempt_log": [attempt_view(a) for a in explanation.attempts],
    }


# -- events ---------------------------------------------------------------------------------------------------

EVENT = {
    "type": "object",
    "required": ["specversion", "id", "source", "type", "event_id", "seq", "received_at"],
    "properties": {
        "specversion": STRING,
        "id": STRING,
        "source": STRING,
        "type": STRING,
        "subject": STRING,
        "time": STRING,
        "datacontenttype": STRING,
        "dataschema": STRING,
        "data": {},
        "data_base64": STRING,
        "event_id": STRING,
        "seq": INTEGER,
        "received_at": STRING,
    },
    "additionalProperties": True,  # CloudEvents extension attributes
}
RAW_REQUEST = obj(
    {
        "request_id": STRING,
        "received_at": TIME,
        "method": STRING,
        "path": STRING,
        "query": {"type": "array", "items": {"type": "array", "items": STRING}},
        "headers": {"type": "array", "items": {"type": "array", "items": STRING}},
        "body": STRING,
        "body_base64": MAYBE_STRING,
        "remote": MAYBE_STRING,
    }
)
EVENT_DETAIL = obj({"event": EVENT, "raw_request": {"oneOf": [RAW_REQUEST, {"type": "null"}]}})
PUBLISHED = obj(
    {
        "events": {
            "type": "array",
            "items": obj({"event_id": STRING, "id": STRING, "source": STRING, "seq": INTEGER, "duplicate": BOOLEAN}),
        }
    }
)


def event_view(stored: StoredEvent) -> JSON:
    return stored_event_to_json(stored)


def raw_request_view(stored: StoredRequest) -> JSON:
    request = stored.request
    return raw_request_to_json(
        request_id=stored.request_id,
        received_at=stored.received_at,
        method=request.method,
        path=request.path,
        query=request.query,
        headers=request.headers,
        body=request.body,
        remote=request.remote,
    )


def published_view(results: list[PublishResult]) -> JSON:
    return {
        "events": [
            {"event_id": r.event_id, "id": r.id, "source": r.source, "seq": r.seq, "duplicate": r.duplicate}
            for r in results
        ]
    }


# -- sources, groups, keys --------------------------------------------------------------------------------------

SOURCE = obj(
    {
        "id": STRING,
        "name": STRING,
        "connector": STRING,
        "path": STRING,
        "options": ANY_OBJECT,
        "enabled": BOOLEAN,
        "rate_limit": MAYBE_NUMBER,
        "secrets_count": INTEGER,
        "previous_secret_expires_at": MAYBE_TIME,
        "created_at": TIME,
        "updated_at": TIME,
        "revealed_secrets": {"type": "array", "items": STRING},
    }
)


def source_view(info: SourceInfo, now: datetime) -> JSON:
    source = info.source
    active = [s for s in source.secrets if s.expires_at is None or s.expires_at > now]
    grace = [s.expires_at for s in active if s.expires_at is not None]
    return {
        "id": source.id,
        "name": source.name,
        "connector": source.connector,
        "path": info.path,
        "options": source.options,
        "enabled": source.enabled,
        "rate_limit": source.rate_limit,
        "secrets_count": len(active),
        "previous_secret_expires_at": time_or_none(max(grace) if grace else None),
        "created_at": format_rfc3339(source.created_at),
        "updated_at": format_rfc3339(source.updated_at),
        "revealed_secrets": list(info.revealed),
    }


GROUP = obj(
    {
        "name": STRING,
        "id": STRING,
        "patterns": {"type": "array", "items": STRING},
        "filter": MAYBE_STRING,
        "retry_schedule": {"type": "array", "items": NUMBER},
        "active_streams": INTEGER,
        "created_at": TIME,
        "last_active_at": TIME,
        "backfilling": BOOLEAN,
        "stats": STATS,
    }
)


def group_view(info: GroupInfo) -> JSON:
    sub = info.subscription
    return {
        "name": info.name,
        "id": sub.id,
        "patterns": list(sub.patterns),
        "filter": sub.filter_json,
        "retry_schedule": [d.total_seconds() for d in sub.retry_schedule],
        "active_streams": info.active_streams,
        "created_at": format_rfc3339(sub.created_at),
        "last_active_at": format_rfc3339(sub.last_active_at),
        "backfilling": sub.backfilling,
        "stats": stats_view(info.stats),
    }


KEY = obj(
    {
        "id": STRING,
        "name": STRING,
        "scopes": {"type": "array", "items": {"type": "string", "enum": ["publish", "subscribe", "admin"]}},
        "created_at": TIME,
        "last_used_at": MAYBE_TIME,
        "revoked_at": MAYBE_TIME,
    }
)
NEW_KEY = {"allOf": [KEY, obj({"key": STRING})]}


def key_view(info: KeyInfo) -> JSON:
    return {
        "id": info.key_id,
        "name": info.name,
        "scopes": [str(s) for s in info.scopes],
        "created_at": format_rfc3339(info.created_at),
        "last_used_at": time_or_none(info.last_used_at),
        "revoked_at": time_or_none(info.revoked_at),
    }

"""The outbound webhook request: body and headers for each payload format, signed per Standard Webhooks."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import quote

from eventbus import __version__
from eventbus.cejson import event_to_json
from eventbus.model import DataKind, StoredEvent, format_rfc3339
from eventbus.signing import signature_header
from eventbus.tracecontext import OUTBOUND

USER_AGENT = f"eventbus/{__version__}"
_TRACE_HEADERS = ("traceparent", "tracestate")


class PayloadFormat(StrEnum):
    STANDARD = "standard"
    CLOUDEVENTS_STRUCTURED = "cloudevents-structured"
    CLOUDEVENTS_BINARY = "cloudevents-binary"
    RAW = "raw"


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    body: bytes
    headers: dict[str, str]


def _standard_body(stored: StoredEvent) -> bytes:
    event = stored.event
    moment = event.time or stored.received_at
    if event.data is not None and event.data_kind is DataKind.JSON:
        # Data that arrived as JSON is stored as valid, compact JSON: spliced in as it is, not parsed and dumped.
        head = json.dumps({"type": event.type, "timestamp": format_rfc3339(moment)}, separators=(",", ":"))
        return head[:-1].encode() + b',"data":' + event.data + b"}"
    payload: dict[str, object] = {"type": event.type, "timestamp": format_rfc3339(moment)}
    if event.data is None:
        payload["data"] = None
    elif event.has_json_data:
        try:
            payload["data"] = event.json_data()
        except ValueError:  # declared JSON but not JSON: sent as bytes rather than dropped
            payload["data_base64"] = base64.b64encode(event.data).decode()
    else:
        payload["data_base64"] = base64.b64encode(event.data).decode()
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _ce_header_value(value: object) -> str:
    """CloudEvents HTTP binding §3.1.3.2: attribute values percent-encoded where they are not printable ASCII."""
    if isinstance(value, datetime):
        text = format_rfc3339(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, bytes):
        text = base64.b64encode(value).decode()
    else:
        text = str(value)
    return quote(text, safe=" !#$&'()*+,/:;=?@[]^_`{|}~-.")


def _binary_headers(stored: StoredEvent) -> dict[str, str]:
    event = stored.event
    headers = {
        "ce-specversion": event.specversion,
        "ce-id": _ce_header_value(event.id),
        "ce-source": _ce_header_value(event.source),
        "ce-type": _ce_header_value(event.type),
    }
    for name, attribute in (("subject", event.subject), ("time", event.time), ("dataschema", event.dataschema)):
        if attribute is not None:
            headers[f"ce-{name}"] = _ce_header_value(attribute)
    for name, extension in event.extensions.items():
        headers[f"ce-{name}"] = _ce_header_value(extension)
    return headers


def build_request(
    stored: StoredEvent,
    *,
    payload_format: PayloadFormat,
    timestamp: int,
    secrets: Sequence[str],
    signing_key: str | None,
    extra_headers: Mapping[str, str],
) -> WebhookRequest:
    """The exact bytes and headers of one attempt (`timestamp` is this attempt's, in Unix seconds)."""
    event = stored.event
    headers: dict[str, str] = {}
    if payload_format is PayloadFormat.STANDARD:
        body, content_type = _standard_body(stored), "application/json"
    elif payload_format is PayloadFormat.CLOUDEVENTS_STRUCTURED:
        document = event_to_json(event)
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        content_type = "application/cloudevents+json"
    else:
        body = event.data or b""
        content_type = event.datacontenttype or (
            "application/json" if event.has_json_data else "application/octet-stream"
        )
        if payload_format is PayloadFormat.CLOUDEVENTS_BINARY:
            headers.update(_binary_headers(stored))
    headers.update(extra_headers)
    outbound = OUTBOUND.get()
    if outbound is not None:  # our delivery span (tracing on): the receiver's parent is this attempt
        headers["traceparent"] = outbound.traceparent
        if outbound.tracestate:
            headers["tracestate"] = outbound.tracestate
    else:
        for name in _TRACE_HEADERS:
            value = event.extensions.get(name)
            if isinstance(value, str) and value:
                headers[name] = value
    headers["content-type"] = content_type
    headers["user-agent"] = USER_AGENT
    headers["webhook-id"] = stored.event_id
    headers["webhook-timestamp"] = str(timestamp)
    headers["webhook-signature"] = signature_header(
        stored.event_id, timestamp, body, secrets=secrets, signing_key=signing_key
    )
    return WebhookRequest(body=body, headers=headers)

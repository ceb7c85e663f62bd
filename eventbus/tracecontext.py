"""W3C Trace Context: `traceparent`/`tracestate` read from a request, kept on events as CloudEvents extensions.

The transports set `CURRENT` for the length of a request or call (the inbound context, or our own span's when
OpenTelemetry is on); every entry point stamps the events it publishes with it, so the trace follows the event into
the store and out again on every delivery (CloudEvents distributed-tracing extension). An event that carries its
own `traceparent` keeps it: the producer knows its trace better than the request that carried it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from eventbus.model import Event

# Version 00 exactly (W3C Trace Context level 1, §3.2): lowercase hex only, as the specification requires.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16
# The specification asks vendors to propagate at least 512 characters and allows dropping the whole header
# beyond that; 32 list members at most (§3.3.1.1). Printable ASCII only: it goes back out as an HTTP header.
MAX_TRACESTATE = 512
_MAX_TRACESTATE_MEMBERS = 32
_TRACESTATE = re.compile(r"[\x20-\x7e]*")


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A valid `traceparent`, and the `tracestate` that came with it (None when absent or unusable)."""

    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    @property
    def parent_id(self) -> str:
        return self.traceparent[36:52]

    @property
    def sampled(self) -> bool:
        return int(self.traceparent[53:55], 16) & 1 == 1


# The trace of the request or call being served (set by the HTTP middleware and the gRPC `rpc()` wrapper).
CURRENT: ContextVar[TraceContext | None] = ContextVar("eventbus_trace", default=None)
# The trace an outbound request sends instead of its event's own: our delivery span's, when OpenTelemetry is on.
OUTBOUND: ContextVar[TraceContext | None] = ContextVar("eventbus_outbound_trace", default=None)


def parse_traceparent(value: str | None) -> str | None:
    """`value` when it is a valid version-00 `traceparent`, else None: an invalid one is ignored, never refused
    (the specification says a receiver starts a new trace rather than fail the request)."""
    if not value or len(value) != 55:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None or match.group(1) == _ZERO_TRACE or match.group(2) == _ZERO_PARENT:
        return None
    return value


def parse_tracestate(value: str | None) -> str | None:
    """`value` stripped when it is a plausible `tracestate` (bounded, printable, at most 32 members), else None."""
    if not value:
        return None
    value = value.strip()
    if not value or len(value) > MAX_TRACESTATE or not _TRACESTATE.fullmatch(value):
        return None
    if value.count(",") >= _MAX_TRACESTATE_MEMBERS:
        return None
    return value


def from_values(traceparent: str | None, tracestate: str | None) -> TraceContext | None:
    """The context of a request's `traceparent`/`tracestate`; a `tracestate` without a valid parent is dropped."""
    parent = parse_traceparent(traceparent.strip() if traceparent else None)
    if parent is None:
        return None
    return TraceContext(parent, parse_tracestate(tracestate))


def from_headers(headers: Mapping[str, str]) -> TraceContext | None:
    """From HTTP headers (a case-insensitive mapping, as aiohttp's)."""
    traceparent = headers.get("traceparent")
    if traceparent is None:
        return None
    return from_values(traceparent, headers.get("tracestate"))


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def stamp(events: list[Event]) -> list[Event]:
    """The events, each carrying the current trace as its `traceparent`/`tracestate` extension attributes unless it
    has a `traceparent` of its own (then its own `tracestate` stays too: the two belong together)."""
    trace = CURRENT.get()
    if trace is None:
        return events
    return [_stamped(event, trace) for event in events]


def _stamped(event: Event, trace: TraceContext) -> Event:
    if "traceparent" in event.extensions:
        return event
    extensions = dict(event.extensions)
    extensions["traceparent"] = trace.traceparent
    if trace.tracestate:
        extensions["tracestate"] = trace.tracestate
    else:
        extensions.pop("tracestate", None)  # a tracestate without its traceparent describes no trace
    return dataclasses.replace(event, extensions=extensions)


def of_event(event: Event) -> TraceContext | None:
    """The trace an event carries (its extension attributes), when its `traceparent` is valid."""
    traceparent = event.extensions.get("traceparent")
    if not isinstance(traceparent, str):
        return None
    tracestate = event.extensions.get("tracestate")
    return from_values(traceparent, tracestate if isinstance(tracestate, str) else None)

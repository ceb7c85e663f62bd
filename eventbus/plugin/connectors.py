"""The inbound connector contract: the whole request and the source in; events, a refusal or a response out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from eventbus.model import Event

__all__ = [
    "Accepted",
    "Connector",
    "ConnectorResult",
    "CustomResponse",
    "Headers",
    "InboundRequest",
    "Refused",
    "SourceConfig",
]


@dataclass(frozen=True, slots=True)
class Headers:
    """Request headers in arrival order, repeats kept; lookups ignore case (HTTP field names do)."""

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Headers:
        """From a mapping or from (name, value) pairs."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        return cls(tuple((str(name), str(value)) for name, value in items))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of `name`, or `default`."""
        wanted = name.lower()
        for key, value in self.pairs:
            if key.lower() == wanted:
                return value
        return default

    def get_all(self, name: str) -> tuple[str, ...]:
        """Every value of `name`, in arrival order."""
        wanted = name.lower()
        return tuple(value for key, value in self.pairs if key.lower() == wanted)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """One HTTP request to `/hooks/{source}`, transport-free: what a connector verifies and parses.

    `body` is the raw bytes exactly as received (signatures are computed over them); `query` keeps repeats and
    order, as (name, value) pairs; `remote` is the peer address, None when unknown.
    """

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    remote: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        return self.headers.get(name)

    def query_value(self, name: str) -> str | None:
        """The first value of query parameter `name` (case-sensitive), or None."""
        for key, value in self.query:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """A named inbound receiver as its connector sees it.

    `secrets` holds the active signing secrets, newest first: two during a rotation, so a connector accepts a
    signature made with either. `options` are the connector's own, as its `validate_options` returned them.
    """

    name: str
    connector: str
    secrets: tuple[str, ...] = ()
    options: Mapping[str, object] = field(default_factory=dict)

    @property
    def event_source(self) -> str:
        """The CloudEvents `source` of every event from this source: `/hooks/<name>`."""
        return f"/hooks/{self.name}"


@dataclass(frozen=True, slots=True)
class Accepted:
    """The request is genuine: these events are committed atomically, then the sender gets 202.

    `dedup_key` is the provider's delivery id (e.g. `X-GitHub-Delivery`): a second request with the same key
    within the dedup window is answered 200 with the first answer and stores nothing. None: no deduplication
    beyond the events' own (`source`, `id`).
    """

    events: Sequence[Event]
    dedup_key: str | None = None

    def __post_init__(self) -> None:
        events = tuple(self.events)
        if not events:
            raise ValueError("Accepted needs at least one event (answer a ping with CustomResponse)")
        if not all(isinstance(event, Event) for event in events):
            raise TypeError("Accepted.events must be eventbus.model.Event values")
        object.__setattr__(self, "events", events)


@dataclass(frozen=True, slots=True)
class Refused:
    """The request is not accepted: nothing is stored and the sender gets `status` (4xx) as problem+json.

    `reason` is shown to the sender, so it must help them and leak nothing: never a secret or the expected
    signature. `field` names the part at fault (a header such as `X-Hub-Signature-256`, or `body`).
    """

    status: int
    reason: str
    field: str | None = None

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 499:
            raise ValueError(f"Refused.status must be a 4xx status, got {self.status}")
        if not self.reason:
            raise ValueError("Refused.reason must say why")

    @classmethod
    def unauthorized(cls, reason: str, field: str | None = None) -> Refused:
        """401: a missing or wrong signature, a stale timestamp."""
        return cls(401, reason, field)

    @classmethod
    def bad_request(cls, reason: str, field: str | None = None) -> Refused:
        """400: a body or header the connector cannot parse."""
        return cls(400, reason, field)


@dataclass(frozen=True, slots=True)
class CustomResponse:
    """Answer the sender with exactly this, store nothing: e.g. a URL-verification challenge."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:
            raise ValueError(f"CustomResponse.status must be 200-599, got {self.status}")

    @classmethod
    def json(cls, value: object, status: int = 200) -> CustomResponse:
        """A JSON body with `Content-Type: application/json`."""
        body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(status, (("Content-Type", "application/json"),), body)

    @classmethod
    def text(cls, value: str, status: int = 200) -> CustomResponse:
        """A plain-text body (UTF-8)."""
        return cls(status, (("Content-Type", "text/plain; charset=utf-8"),), value.encode())


ConnectorResult = Accepted | Refused | CustomResponse


class Connector(Protocol):
    """Verifies and parses one provider's webhooks; one instance serves every source that names it."""

    @property
    def name(self) -> str:
        """Unique among connectors: what a source's `connector` names and the prefix of its event types."""
        ...

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        """Check a source's options when it is created or updated; return them normalised (defaults filled).

        Raise `eventbus.errors.InvalidArgumentError.for_field("options.<key>", why)` for a bad one.
        """
        ...

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        """Verify `request` for `source` and turn it into events, a refusal, or a custom response.

        `now` is the core clock's time: use it (never the wall clock) for timestamp tolerances, so tests can
        pin it. Async so a connector may do I/O (fetch a provider's public key); one that only computes
        HMACs simply never awaits. Raising is a bug: the sender gets a 500 naming the connector, and the
        failure is logged and counted against the plugin.
        """
        ...

"""The one error hierarchy: transport-free, mapped to gRPC codes and HTTP statuses at the edges."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One field at fault and why: `field` is a dotted path (`events[2].time`)."""

    field: str
    detail: str


class EventBusError(Exception):
    """Base of every error eventbus raises on purpose."""

    title = "Internal error"

    def __init__(self, message: str, *, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.violations: list[FieldViolation] = list(violations or [])


class InvalidArgumentError(EventBusError):
    """The request is malformed; `violations` name the fields at fault."""

    title = "Invalid argument"

    @classmethod
    def for_field(cls, field: str, detail: str) -> InvalidArgumentError:
        """One-field shortcut: the message repeats the field so a single line says everything."""
        return cls(f"{field}: {detail}", violations=[FieldViolation(field, detail)])

    @classmethod
    def from_violations(cls, violations: list[FieldViolation]) -> InvalidArgumentError:
        """All the problems found at once; the message names the first and counts the rest."""
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        return cls(f"{first.field}: {first.detail}{more}", violations=violations)

    def prefixed(self, prefix: str) -> InvalidArgumentError:
        """The same error with every field path placed under `prefix` (e.g. `events[3]`)."""
        violations = [FieldViolation(f"{prefix}.{v.field}" if v.field else prefix, v.detail) for v in self.violations]
        message = f"{prefix}.{self.message}" if self.violations else f"{prefix}: {self.message}"
        return InvalidArgumentError(message, violations=violations)


class PayloadTooLargeError(InvalidArgumentError):
    """A body, event or batch is over its size limit."""

    title = "Payload too large"


class SchemaValidationError(InvalidArgumentError):
    """An event's data does not validate against the JSON Schema registered for its type."""

    title = "Schema validation failed"


class UnauthenticatedError(EventBusError):
    """No credentials, or credentials that match no key."""

    title = "Unauthenticated"


class PermissionDeniedError(EventBusError):
    """The key is valid but lacks the scope the operation needs."""

    title = "Permission denied"


class NotFoundError(EventBusError):
    """The named resource does not exist."""

    title = "Not found"


class AlreadyExistsError(EventBusError):
    """A resource with that name or id exists already."""

    title = "Already exists"


class FailedPreconditionError(EventBusError):
    """The request is valid but conflicts with the current state (e.g. a join that differs from its group)."""

    title = "Failed precondition"


class ConcurrentUpdateError(FailedPreconditionError):
    """The resource changed between reading it and writing the change: read it again and retry."""


class RequestTimeoutError(EventBusError):
    """The request did not arrive in time (a body that trickles or stalls)."""

    title = "Request timeout"


class ResourceExhaustedError(EventBusError):
    """A limit was reached: too many requests, connections or items."""

    title = "Resource exhausted"


class UnavailableError(EventBusError):
    """The store or the server cannot take the request now; retrying later is safe."""

    title = "Unavailable"


class DeliveryLeaseLostError(EventBusError):
    """An ack, retry, drop or extend named a delivery whose lease this caller no longer holds."""

    title = "Delivery lease lost"


ALL_ERRORS: tuple[type[EventBusError], ...] = (
    EventBusError,
    InvalidArgumentError,
    PayloadTooLargeError,
    SchemaValidationError,
    UnauthenticatedError,
    PermissionDeniedError,
    NotFoundError,
    AlreadyExistsError,
    FailedPreconditionError,
    ConcurrentUpdateError,
    RequestTimeoutError,
    ResourceExhaustedError,
    UnavailableError,
    DeliveryLeaseLostError,
)

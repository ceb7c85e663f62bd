"""eventbus: a webhook gateway and event bus. The public API for services and plugins is re-exported here."""

from __future__ import annotations

from eventbus.errors import (
    AlreadyExistsError,
    DeliveryLeaseLostError,
    EventBusError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from eventbus.model import DataKind, Event, PublishResult, StoredEvent

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "DataKind",
    "DeliveryLeaseLostError",
    "Event",
    "EventBusError",
    "FailedPreconditionError",
    "FieldViolation",
    "InvalidArgumentError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PublishResult",
    "ResourceExhaustedError",
    "StoredEvent",
    "UnauthenticatedError",
    "UnavailableError",
    "__version__",
]

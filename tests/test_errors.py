"""Every error class is mapped on both transports, and the mappings say the same thing."""

from __future__ import annotations

import grpc
import pytest

from eventbus import errors
from eventbus.grpc.errors import GRPC_STATUS, error_from_rpc, status_code_of, to_status
from eventbus.http.problems import HTTP_STATUS, http_status_of


def test_every_error_class_is_in_both_tables() -> None:
    classes = {cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.EventBusError)}
    assert classes == set(errors.ALL_ERRORS)
    assert classes <= set(GRPC_STATUS)
    assert classes <= set(HTTP_STATUS)


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (errors.InvalidArgumentError("x"), grpc.StatusCode.INVALID_ARGUMENT, 400),
        (errors.PayloadTooLargeError("x"), grpc.StatusCode.INVALID_ARGUMENT, 413),
        (errors.NotFoundError("x"), grpc.StatusCode.NOT_FOUND, 404),
        (errors.FailedPreconditionError("x"), grpc.StatusCode.FAILED_PRECONDITION, 409),
        (errors.UnavailableError("x"), grpc.StatusCode.UNAVAILABLE, 503),
        (errors.UnauthenticatedError("x"), grpc.StatusCode.UNAUTHENTICATED, 401),
    ],
)
def test_mapping(error: errors.EventBusError, code: grpc.StatusCode, status: int) -> None:
    assert status_code_of(error) is code
    assert http_status_of(error) == status


def test_rich_status_carries_field_violations() -> None:
    error = errors.InvalidArgumentError.for_field("events[1].type", "must not be empty")
    status = to_status(error)
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    assert status.details == "events[1].type: must not be empty"
    assert any(key == "grpc-status-details-bin" for key, _ in status.trailing_metadata)


def test_prefixed_keeps_every_violation() -> None:
    error = errors.InvalidArgumentError(
        "id: is required", violations=[errors.FieldViolation("id", "is required"), errors.FieldViolation("type", "bad")]
    )
    moved = error.prefixed("events[3]")
    assert [v.field for v in moved.violations] == ["events[3].id", "events[3].type"]
    assert moved.message.startswith("events[3].id")


def test_error_from_rpc_maps_codes_back() -> None:
    class FakeCall(grpc.aio.AioRpcError):  # a third-party type, built the way grpc builds it
        pass

    call = FakeCall(
        grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), details="group 'x' does not exist"
    )
    error = error_from_rpc(call)
    assert isinstance(error, errors.NotFoundError)
    assert error.message == "group 'x' does not exist"

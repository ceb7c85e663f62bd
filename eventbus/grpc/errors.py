"""Errors on the gRPC wire: the status code table and `google.rpc.BadRequest` field violations."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from eventbus import errors

GRPC_STATUS: dict[type[errors.EventBusError], grpc.StatusCode] = {
    errors.EventBusError: grpc.StatusCode.INTERNAL,
    errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.PayloadTooLargeError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.SchemaValidationError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ConcurrentUpdateError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.RequestTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.DeliveryLeaseLostError: grpc.StatusCode.FAILED_PRECONDITION,
}


def status_code_of(error: errors.EventBusError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in GRPC_STATUS:
            return GRPC_STATUS[cls]
    return grpc.StatusCode.INTERNAL


def to_status(error: errors.EventBusError) -> grpc.Status:
    """A rich status: code, message, and the field violations as `google.rpc.BadRequest`."""
    code = status_code_of(error)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message)
    if error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.detail)
                for v in error.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    return rpc_status.to_status(status)


async def abort(context: grpc.aio.ServicerContext[object, object], error: errors.EventBusError) -> None:
    status = to_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


def field_violations(call: grpc.aio.Call | grpc.RpcError) -> list[tuple[str, str]]:
    """Client side: the (field, description) pairs of a failed call's BadRequest detail, if any."""
    status = rpc_status.from_call(call)
    found: list[tuple[str, str]] = []
    if status is None:
        return found
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend((v.field, v.description) for v in bad_request.field_violations)
    return found


_FROM_CODE: dict[grpc.StatusCode, type[errors.EventBusError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: errors.UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: errors.NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: errors.UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.UnavailableError,
    grpc.StatusCode.CANCELLED: errors.UnavailableError,
}


def error_from_rpc(exc: grpc.aio.AioRpcError) -> errors.EventBusError:
    """Client side: the domain error a failed call stands for, with its field violations."""
    cls = _FROM_CODE.get(exc.code(), errors.EventBusError)
    try:
        violations = [errors.FieldViolation(f, d) for f, d in field_violations(exc)]
    except Exception:  # a status without parsable details still has its code and message
        violations = []
    return cls(exc.details() or exc.code().name, violations=violations)

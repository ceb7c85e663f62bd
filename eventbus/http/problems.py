"""RFC 9457 problem+json: the HTTP status table and the one middleware that renders every error."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from eventbus import errors

log = structlog.get_logger("eventbus.http")

HTTP_STATUS: dict[type[errors.EventBusError], int] = {
    errors.EventBusError: 500,
    errors.InvalidArgumentError: 400,
    errors.PayloadTooLargeError: 413,
    errors.SchemaValidationError: 422,
    errors.UnauthenticatedError: 401,
    errors.PermissionDeniedError: 403,
    errors.NotFoundError: 404,
    errors.AlreadyExistsError: 409,
    errors.FailedPreconditionError: 409,
    errors.ConcurrentUpdateError: 409,
    errors.RequestTimeoutError: 408,
    errors.ResourceExhaustedError: 429,
    errors.UnavailableError: 503,
    errors.DeliveryLeaseLostError: 409,
}
PROBLEM_TYPE_BASE = "https://eventbus.dev/problems/"
RETRY_UNAVAILABLE_AFTER = "5"  # seconds, on every 503


def http_status_of(error: errors.EventBusError) -> int:
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def problem_response(
    status: int, title: str, detail: str, *, violations: list[errors.FieldViolation] | None = None, slug: str = ""
) -> web.Response:
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_BASE + (slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if violations:
        body["errors"] = [{"field": v.field, "detail": v.detail} for v in violations]
    response = web.Response(status=status, text=json.dumps(body), content_type="application/problem+json")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="eventbus"'
    elif status == 503:  # the store is down or full, or the server is draining: worth retrying, not at once
        response.headers["Retry-After"] = RETRY_UNAVAILABLE_AFTER
    return response


def problem_of(error: errors.EventBusError) -> web.Response:
    return problem_response(http_status_of(error), error.title, error.message, violations=error.violations)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as problem+json: domain errors by the table, aiohttp's own by their status."""
    try:
        return await handler(request)
    except errors.EventBusError as exc:
        return problem_of(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        title = exc.reason or "Error"
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else title
        if exc.status == 404:
            detail = f"no route for {request.method} {request.path}"
        elif exc.status == 405:
            detail = f"{request.method} is not allowed on {request.path}"
        response = problem_response(exc.status, title, detail)
        for name in ("Allow", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:
        log.exception("http_handler_failed", method=request.method, path=request.path)
        return problem_response(500, "Internal error", "the server failed to handle this request; it was logged")

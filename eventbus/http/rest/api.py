"""The REST API's frame: operations declared once (method, path, access, parameters, schemas, handler), installed
as aiohttp routes and described by the same declarations in `/openapi.json` — the document cannot drift from
the routes because it is made from them."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from eventbus import __version__
from eventbus.auth import OPEN, Access
from eventbus.bus.services import Services
from eventbus.errors import InvalidArgumentError
from eventbus.model import MAX_JSON_DEPTH, json_too_deep

JSON = dict[str, Any]
SERVICES = web.AppKey("rest_services", Services)
# The body of the request being handled, when it was read before the handler (to check its Idempotency-Key).
EARLY_BODY: ContextVar[bytes | None] = ContextVar("eventbus_rest_early_body", default=None)
MAX_BODY = 1024 * 1024  # a management request body; publishing goes up to 16 MiB (POST /events)
_PATH_PARAM = re.compile(r"\{([a-z_]+)\}")
# The problems any operation may answer, besides its own answers.
COMMON_PROBLEMS = {
    "400": "The request is malformed or a field is invalid (`errors` names the fields).",
    "401": "No API key, or one the server does not know.",
    "403": "The API key lacks the scope this operation needs.",
    "404": "The resource does not exist.",
    "409": "The resource's state forbids this now, or it changed meanwhile.",
    "413": "The request body is too large.",
    "415": "The body is not `application/json`.",
    "422": "The body is valid JSON but cannot be processed (a schema refused an event; an Idempotency-Key reused).",
    "429": "Too many requests.",
    "503": "The store is unavailable.",
}


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter."""

    name: str
    schema: JSON
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """What a handler returns: a status and a JSON document (None: no body, for 204)."""

    status: int
    document: object = None
    headers: Mapping[str, str] = field(default_factory=dict)


class Call:
    """One request as a handler sees it: the services, path parameters, query values and the JSON body."""

    def __init__(self, request: web.Request, operation: Operation) -> None:
        self.request = request
        self.operation = operation
        self.services: Services = request.app[SERVICES]
        self._body: object = None
        self._read = False

    def path(self, name: str) -> str:
        return self.request.match_info[name]

    def query(self, name: str) -> str | None:
        values = self.request.query.getall(name, [])
        if len(values) > 1:
            raise InvalidArgumentError.for_field(name, "give it once")
        return values[0] if values else None

    def query_all(self, name: str) -> list[str]:
        return list(self.request.query.getall(name, []))

    async def body(self) -> JSON:
        """The body, which must be a JSON object (`{}` when the operation's body is optional and none came)."""
        if not self._read:
            self._read = True
            self._body = await read_json_object(self.request, optional=not self.operation.body_required)
        assert isinstance(self._body, dict)
        return self._body


Handler = Callable[[Call], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    access: Access
    handler: Handler
    query: Sequence[Param] = ()
    body: JSON | None = None  # the request body's schema
    body_required: bool = True
    responses: Mapping[int, tuple[str, JSON | None]] = field(default_factory=dict)  # status → (description, schema)
    idempotent: bool = False  # honours Idempotency-Key (every POST: a retried POST must not run twice)
    reveals: tuple[str, ...] = ()  # top-level answer fields holding a secret shown once: never kept for replays


class Api:
    """The REST operations; route modules add theirs with `api.operation(...)` as a decorator."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []
        self.components: dict[str, JSON] = {}

    def component(self, name: str, schema: JSON) -> JSON:
        """Register a named schema; returns a `$ref` to it."""
        self.components[name] = schema
        return ref(name)

    def operation(
        self,
        method: str,
        path: str,
        *,
        operation_id: str,
        summary: str,
        tag: str,
        access: Access,
        responses: Mapping[int, tuple[str, JSON | None]],
        query: Sequence[Param] = (),
        body: JSON | None = None,
        body_required: bool = True,
        idempotent: bool | None = None,
        reveals: Sequence[str] = (),
    ) -> Callable[[Handler], Handler]:
        # The issue promises Idempotency-Key on POSTs, not on creates only: a retried rotate-secret, resend or
        # test-send would otherwise run twice (and a rotation's first secret would be shown to no one).
        honours_key = method == "POST" if idempotent is None else idempotent

        def register(handler: Handler) -> Handler:
            self.operations.append(
                Operation(
                    method,
                    path,
                    operation_id,
                    summary,
                    tag,
                    access,
                    handler,
                    tuple(query),
                    body,
                    body_required,
                    dict(responses),
                    honours_key,
                    tuple(reveals),
                )
            )
            return handler

        return register

    def install(self, app: web.Application, services: Services, access_table: dict[str, Access]) -> None:
        """Add every operation as a route (declaring its access in the HTTP auth table) and `/openapi.json`."""
        app[SERVICES] = services
        from eventbus.http.rest.idempotency import with_idempotency  # it needs this module's names

        for operation in self.operations:
            access_table[f"{operation.method} {operation.path}"] = operation.access
            handler = _route_handler(operation)
            if operation.idempotent:
                handler = with_idempotency(handler, operation.reveals)
            app.router.add_route(operation.method, operation.path, handler)
        document = json.dumps(self.openapi()).encode()

        async def openapi(request: web.Request) -> web.Response:
            return web.Response(body=document, content_type="application/json")

        access_table["/openapi.json"] = OPEN
        app.router.add_get("/openapi.json", openapi)

    def openapi(self) -> JSON:
        paths: dict[str, JSON] = {}
        for operation in self.operations:
            paths.setdefault(operation.path, {})[operation.method.lower()] = _describe(operation)
        components: JSON = {"schemas": {**self.components, "Problem": PROBLEM}}
        components["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key: `ebk_<key id>_<secret>`."}
        }
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "eventbus management API",
                "version": __version__,
                "description": "Subscriptions, endpoints, sources, consumer groups, events, deliveries, event types "
                "and API keys. JSON, snake_case; errors are application/problem+json (RFC 9457).",
            },
            "paths": paths,
            "components": components,
        }


def ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


PROBLEM: JSON = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "detail"],
                "properties": {"field": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
    },
}


def _describe(operation: Operation) -> JSON:
    parameters: list[JSON] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in _PATH_PARAM.findall(operation.path)
    ]
    parameters += [
        {"name": p.name, "in": "query", "required": p.required, "schema": p.schema, "description": p.description}
        for p in operation.query
    ]
    if operation.idempotent:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "Same key and same body within 24 h: the same answer, and the operation runs once.",
            }
        )
    responses: JSON = {}
    for status, (description, schema) in sorted(operation.responses.items()):
        answer: JSON = {"description": description}
        if schema is not None:
            answer["content"] = {"application/json": {"schema": schema}}
        responses[str(status)] = answer
    for code, description in COMMON_PROBLEMS.items():
        responses.setdefault(
            code,
            {"description": description, "content": {"application/problem+json": {"schema": ref("Problem")}}},
        )
    described: JSON = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "parameters": parameters,
        "responses": responses,
        "security": [] if operation.access == OPEN else [{"apiKey": []}],
        "x-scope": str(operation.access),
    }
    if operation.body is not None:
        described["requestBody"] = {
            "required": operation.body_required,
            "content": {"application/json": {"schema": operation.body}},
        }
    return described


def _route_handler(operation: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        answer = await operation.handler(Call(request, operation))
        if answer.document is None and answer.status == 204:
            return web.Response(status=204, headers=answer.headers)
        try:
            body = json.dumps(answer.document, ensure_ascii=False, separators=(",", ":")).encode()
        except UnicodeEncodeError:  # a lone surrogate stored by another way in: escaped, never a 500
            body = json.dumps(answer.document, separators=(",", ":")).encode()
        return web.Response(status=answer.status, body=body, content_type="application/json", headers=answer.headers)

    return handle


_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(document: object) -> bool:
    """Whether any string or key of the parsed document holds a lone surrogate (walked without recursion)."""
    pending = [document]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


async def read_json_object(request: web.Request, *, optional: bool = False) -> JSON:
    """The body as a JSON object: `application/json` (415 otherwise), at most 1 MiB (413), valid JSON (400)."""
    from eventbus.http.events import read_body

    early = EARLY_BODY.get()
    body = early if early is not None else await read_body(request, MAX_BODY)
    if not body.strip():
        if optional:
            return {}
        raise InvalidArgumentError.for_field("body", "a JSON object is required")
    media = (request.content_type or "").lower()
    if media not in ("application/json", "") and not media.endswith("+json"):
        raise web.HTTPUnsupportedMediaType(text=f"send application/json, not {media}")
    try:
        document = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgumentError.for_field("body", f"not valid JSON: {exc}") from exc
    if json_too_deep(body):
        raise InvalidArgumentError.for_field("body", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if _ESCAPED_SURROGATE.search(body) and _has_lone_surrogate(document):
        raise InvalidArgumentError.for_field("body", "a string holds a lone surrogate (\\uD800-\\uDFFF alone)")
    if not isinstance(document, dict):
        raise InvalidArgumentError.for_field("body", "must be a JSON object")
    return document


def _refuse_constant(name: str) -> object:
    # NaN and Infinity are not JSON (RFC 8259): kept in options, they would make every later answer unparseable.
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: valid JSON, but Infinity once parsed (see _refuse_constant)
        raise ValueError(f"{text[:40]} is out of range")
    return value

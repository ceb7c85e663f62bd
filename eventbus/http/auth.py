"""HTTP auth: the one table of what every route needs (a scope, or nothing), and the middleware enforcing it."""

from __future__ import annotations

from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from eventbus.auth import OPEN, Access, KeyRing, Scope
from eventbus.http.problems import Handler

# Every route, by its canonical path (DESIGN.md §5 Auth). A route missing here still needs `admin` (fail closed),
# but tests/test_scopes.py fails until it is listed: adding a route means deciding who may call it.
ROUTE_ACCESS: Final[dict[str, Access]] = {
    "/healthz": OPEN,
    "/readyz": OPEN,
    "/openapi.json": OPEN,
    "/hooks/{source}": OPEN,  # the source's connector authenticates the sender (signatures)
    "/ui": OPEN,  # the dashboard shell; its data calls go to /v1 with a key kept in sessionStorage
    "/ui/": OPEN,
    "/metrics": Scope.ADMIN,
    "/events": Scope.PUBLISH,
}
DEFAULT_ACCESS: Final[Access] = Scope.ADMIN  # /v1/... and anything not listed


def access_of(canonical: str) -> Access:
    return ROUTE_ACCESS.get(canonical, DEFAULT_ACCESS)


def auth_middleware(keys: KeyRing) -> Middleware:
    """`Authorization: Bearer <key>` checked against the route's scope before the handler runs (401, 403)."""

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        # No resource: no route matched (404, 405), which the router answers without reading anything.
        if resource is not None:
            access = access_of(resource.canonical)
            if access != OPEN:
                keys.authorize(request.headers.get("Authorization"), Scope(access))
        return await handler(request)

    return authorize

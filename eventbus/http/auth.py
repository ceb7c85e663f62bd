"""HTTP auth: the one table of what every route needs (a scope, or nothing), and the middleware enforcing it."""

from __future__ import annotations

from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from eventbus.auth import OPEN, Access, KeyRing, Scope
from eventbus.http.problems import Handler

# Every route, by its canonical path, or by "METHOD path" where methods differ (DESIGN.md §5 Auth). A route
# missing here still needs `admin` (fail closed), but tests/test_scopes.py fails until it is listed: adding a route
# means deciding who may call it. The REST API adds each of its operations here when it is installed, from the
# access each operation declares (eventbus/http/rest/).
ROUTE_ACCESS: Final[dict[str, Access]] = {
    "/healthz": OPEN,
    "/readyz": OPEN,
    "/openapi.json": OPEN,
    "/hooks/{source}": OPEN,  # the source's connector authenticates the sender (signatures)
    "/ui": OPEN,  # the dashboard shell; its data calls go to /v1 with a key kept in sessionStorage
    "/ui/": OPEN,
    "/ui/{file}": OPEN,  # the dashboard's script and stylesheet
    "/metrics": Scope.ADMIN,
    "/events": Scope.PUBLISH,
}
DEFAULT_ACCESS: Final[Access] = Scope.ADMIN  # /v1/... and anything not listed
# Routes a setting opened on one server's application (`--metrics-public` opens /metrics): per application, not in
# the table above, because one process may run several servers (tests) with different settings.
OPENED_ROUTES: Final = web.AppKey("opened_routes", frozenset[str])


def declared_access(method: str, canonical: str) -> Access | None:
    """What the table says of this route: its "METHOD path" entry, else its path entry, else None."""
    found = ROUTE_ACCESS.get(f"{method} {canonical}")
    return found if found is not None else ROUTE_ACCESS.get(canonical)


def access_of(method: str, canonical: str) -> Access:
    found = declared_access(method, canonical)
    return found if found is not None else DEFAULT_ACCESS


def auth_middleware(keys: KeyRing) -> Middleware:
    """`Authorization: Bearer <key>` checked against the route's scope before the handler runs (401, 403)."""

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        # No resource: no route matched (404, 405), which the router answers without reading anything.
        if resource is not None:
            access = access_of(request.method, resource.canonical)
            if access != OPEN and resource.canonical not in request.app.get(OPENED_ROUTES, ()):
                keys.authorize(request.headers.get("Authorization"), Scope(access))
        return await handler(request)

    return authorize

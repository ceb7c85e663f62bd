"""The management REST API under `/v1` (DESIGN.md §5), on the same service layer as gRPC `Admin`, described by
`/openapi.json` (built from the same declarations as the routes)."""

from __future__ import annotations

from aiohttp import web

from eventbus.bus.services import Services
from eventbus.http.auth import ROUTE_ACCESS
from eventbus.http.rest import resources, subscriptions, types
from eventbus.http.rest.api import Api

__all__ = ["build_api", "install"]


def build_api() -> Api:
    api = Api()
    subscriptions.add(api)
    resources.add(api)
    types.add(api)
    return api


def install(app: web.Application, services: Services) -> Api:
    """Add `/v1/...` and `/openapi.json` to `app`."""
    api = build_api()
    api.install(app, services, ROUTE_ACCESS)
    return api

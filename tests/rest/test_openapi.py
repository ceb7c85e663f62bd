"""`/openapi.json` is a valid OpenAPI 3.1 document and matches the running app: every `/v1` route is documented
with its method and every documented operation is a route (no drift), each with an operationId and the
security and `x-scope` its access in `ROUTE_ACCESS` says; every schema in it is valid JSON Schema 2020-12."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from eventbus.auth import OPEN
from eventbus.http.auth import ROUTE_ACCESS, declared_access
from eventbus.runtime import EventBusServer
from tests.rest.helpers import Rest, ok, openapi

METHODS = ("get", "put", "post", "patch", "delete")


@pytest.fixture
async def document(rest: Rest) -> dict[str, Any]:
    reply = await rest.with_key(None).get("/openapi.json")  # open: no key needed
    return dict(ok(reply))


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every Schema Object of the document: components, parameters, request bodies and responses."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield value
            elif key == "schemas" and isinstance(value, dict):
                yield from (v for v in value.values() if isinstance(v, dict))
            else:
                yield from schemas(value)
    elif isinstance(node, list):
        for item in node:
            yield from schemas(item)


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    # The OpenAPI Initiative's own schema of 3.1 documents, as schemathesis bundles it.
    jsonschema.Draft202012Validator(definitions.OPENAPI_31).validate(document)
    for schema in schemas(document):
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_reference_resolves_and_every_path_parameter_is_declared(document: dict[str, Any]) -> None:
    names = set(document["components"]["schemas"])
    text = repr(document)
    for name in re.findall(r"'#/components/schemas/([^']+)'", text):
        assert name in names, name
    for method, path, operation in operations(document):
        declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert declared == set(re.findall(r"\{([^}]+)\}", path)), (method, path)
        assert all(p["required"] for p in operation["parameters"] if p["in"] == "path")
        for status, answer in operation["responses"].items():
            assert re.fullmatch(r"[1-5]\d\d", status) and answer["description"], (method, path, status)


def test_the_served_document_is_the_one_the_operations_make(document: dict[str, Any]) -> None:
    assert document == openapi()


async def test_every_route_is_documented_and_every_operation_is_a_route(
    server: EventBusServer, document: dict[str, Any]
) -> None:
    assert server.http_app is not None
    routes = {
        (route.method, route.resource.canonical)
        for route in server.http_app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/v1/")
        and route.method not in ("HEAD", "OPTIONS")
    }
    documented = {(method, path) for method, path, _ in operations(document)}
    assert routes - documented == set(), "routes missing from /openapi.json"
    assert documented - routes == set(), "documented operations with no route"
    assert all(path.startswith("/v1/") for _, path in documented)


def test_every_operation_has_an_id_and_the_security_of_its_access(document: dict[str, Any]) -> None:
    seen: set[str] = set()
    for method, path, operation in operations(document):
        operation_id = operation["operationId"]
        assert re.fullmatch(r"[a-z][A-Za-z]+", operation_id), operation_id
        assert operation_id not in seen, f"operationId {operation_id} twice"
        seen.add(operation_id)
        assert operation["summary"] and operation["tags"]
        access = declared_access(method, path)
        assert access is not None, f"{method} {path} is not in ROUTE_ACCESS"
        assert ROUTE_ACCESS[f"{method} {path}"] == access  # declared per method, as the API installs it
        assert operation["x-scope"] == str(access), (method, path)
        if access == OPEN:
            assert operation["security"] == [], (method, path)
        else:
            assert operation["security"] == [{"apiKey": []}], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
    scheme = document["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_errors_are_documented_as_problems_and_posts_take_an_idempotency_key(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert list(answer["content"]) == ["application/problem+json"], (method, path, status)
            elif status != "204":
                assert list(answer["content"]) == ["application/json"], (method, path, status)
        headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        assert headers == (["Idempotency-Key"] if method == "POST" else []), (method, path)
        if "requestBody" in operation:
            assert list(operation["requestBody"]["content"]) == ["application/json"]
            assert operation["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"

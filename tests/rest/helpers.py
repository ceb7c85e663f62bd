"""Helpers of the REST API tests: a small JSON client for `/v1`, problem+json and schema checks against the
served OpenAPI document, and a walker that follows `next_page_token` to the end."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import aiohttp
import jsonschema
from multidict import CIMultiDictProxy
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from eventbus.http.rest import build_api

ADMIN_KEY = "ebk_root_" + "k" * 40  # the test server's `--api-key`: every scope
ONE_RETRY = [1.0]  # a retry schedule of one 1 s delay: two attempts, dead within a second of the clock
_UNSET: Any = object()
Query = Mapping[str, str] | Sequence[tuple[str, str]]
MAX_PAGES = 1000


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer: status, headers and the raw body (`json` parses it)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class Rest:
    """`/v1` over real HTTP with `Authorization: Bearer <key>` (None: no header)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, key: str | None) -> None:
        self.session = session
        self.base = base
        self.key = key

    def with_key(self, key: str | None) -> Rest:
        return Rest(self.session, self.base, key)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = _UNSET,
        body: bytes | None = None,
        content_type: str | None = None,
        params: Query | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if self.key is not None:
            sent["Authorization"] = f"Bearer {self.key}"
        if json is not _UNSET:
            body = encode(json)
            sent.setdefault("Content-Type", "application/json")
        if content_type is not None:
            sent["Content-Type"] = content_type
        async with self.session.request(method, self.base + path, data=body, params=params, headers=sent) as answer:
            return Reply(answer.status, answer.headers, await answer.read())

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, json: Any = _UNSET, **kwargs: Any) -> Reply:
        return await self.request("POST", path, json=json, **kwargs)

    async def put(self, path: str, json: Any = _UNSET, **kwargs: Any) -> Reply:
        return await self.request("PUT", path, json=json, **kwargs)

    async def patch(self, path: str, json: Any = _UNSET, **kwargs: Any) -> Reply:
        return await self.request("PATCH", path, json=json, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("DELETE", path, **kwargs)


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def ok(reply: Reply, status: int = 200) -> Any:
    """The JSON body of a successful answer with this status (the problem is shown when it is not)."""
    assert reply.status == status, f"{reply.status} (wanted {status}): {reply.text}"
    if status == 204:
        assert reply.body == b""
        return None
    assert reply.content_type == "application/json", reply.headers
    return reply.json


def problem(reply: Reply, status: int, field: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem with this status, whose `errors` name `field` when given."""
    assert reply.status == status, f"{reply.status} (wanted {status}): {reply.text}"
    assert reply.content_type == "application/problem+json", reply.headers
    document: dict[str, Any] = reply.json
    assert document["status"] == status
    assert document["type"].startswith("https://") and document["title"] and document["detail"], document
    if field is not None:
        assert field in fields(document), document
    return document


def fields(document: Mapping[str, Any]) -> list[str]:
    return [violation["field"] for violation in document.get("errors", [])]


# -- the OpenAPI document as the judge of every answer's shape ------------------------------------------------


@cache
def openapi() -> dict[str, Any]:
    return build_api().openapi()


@cache
def _registry() -> Registry[Any]:
    return Registry().with_resource("urn:eventbus:openapi", Resource.from_contents(openapi(), DRAFT202012))


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def conforms(reply: Reply, method: str, path: str) -> Any:
    """The body, checked against the schema `/openapi.json` documents for this operation, status and media type."""
    responses = openapi()["paths"][path][method.lower()]["responses"]
    assert str(reply.status) in responses, f"{method} {path} answered {reply.status}, which it does not document"
    content = responses[str(reply.status)].get("content")
    if content is None:
        assert reply.body == b"", reply.text
        return None
    assert reply.content_type in content, (reply.content_type, list(content))
    pointer = _pointer("paths", path, method.lower(), "responses", str(reply.status), "content", reply.content_type)
    schema = {"$ref": f"urn:eventbus:openapi#/{pointer}/schema"}
    document = reply.json
    jsonschema.Draft202012Validator(
        schema, registry=_registry(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(document)
    return document


async def walk(rest: Rest, path: str, *, page_size: int, params: Query | None = None) -> list[Any]:
    """Every item of a listing, page by page; each page is within `page_size` and conforms to the document."""
    items: list[Any] = []
    token = ""
    given = list(params.items()) if isinstance(params, Mapping) else list(params or [])
    for _ in range(MAX_PAGES):
        query = [*given, ("page_size", str(page_size))]
        if token:
            query.append(("page_token", token))
        page = conforms(await rest.get(path, params=query), "GET", path)
        assert len(page["items"]) <= page_size
        items += page["items"]
        token = page["next_page_token"]
        if not token:
            return items
    raise AssertionError(f"{path}: more than {MAX_PAGES} pages")

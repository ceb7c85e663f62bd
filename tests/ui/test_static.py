"""`/ui/` serves the dashboard's three files, from package data, with a strict CSP and no caching surprises."""

from __future__ import annotations

import re

import aiohttp
import pytest

from eventbus.http.ui import CONTENT_SECURITY_POLICY, STATIC_FILES
from eventbus.runtime import EventBusServer

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def test_the_policy_is_strict() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval', no CDN
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'none'"


@pytest.mark.parametrize(("path", "media"), [("", "text/html"), ("app.js", "text/javascript"), ("app.css", "text/css")])
async def test_each_file_with_its_type_and_the_security_headers(
    server: EventBusServer, dashboard_url: str, path: str, media: str
) -> None:
    async with aiohttp.ClientSession() as http, http.get(dashboard_url + path) as response:
        body = await response.text()
        assert response.status == 200
        assert response.content_type == media
        assert response.charset == "utf-8"
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value, name
    assert body.strip()


async def test_ui_without_the_slash_redirects(dashboard_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(dashboard_url.rstrip("/"), allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "ui/"
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    async with aiohttp.ClientSession() as http, http.get(dashboard_url.rstrip("/")) as response:
        assert response.status == 200
        assert str(response.url) == dashboard_url


@pytest.mark.parametrize("name", ["nope.js", "..%2F__init__.py", "%2e%2e", "app.js.map"])
async def test_only_the_listed_files_are_served(dashboard_url: str, name: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(dashboard_url + name) as response:
        assert response.status == 404
        assert response.content_type == "application/problem+json"


async def test_the_shell_needs_no_key_but_the_api_does(
    server: EventBusServer, admin_key: str, dashboard_url: str
) -> None:
    async with aiohttp.ClientSession() as http:
        for name in ("", *(n for n in STATIC_FILES if n != "index.html")):
            async with http.get(dashboard_url + name) as response:
                assert response.status == 200, name
        async with http.get(dashboard_url.replace("/ui/", "/v1/subscriptions")) as response:
            assert response.status == 401


def test_the_shell_loads_nothing_from_elsewhere() -> None:
    """The shell names only its own script and stylesheet (the CSP would block anything else anyway)."""
    from importlib import resources

    folder = resources.files("eventbus.http.ui") / "static"
    html = (folder / "index.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert '<script type="module" src="app.js"></script>' in html
    script = (folder / "app.js").read_text()
    assert re.search(r"\.(inner|outer)HTML\b|insertAdjacentHTML|document\.write|\beval\(", script) is None

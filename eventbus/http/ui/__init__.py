"""The dashboard at `/ui/`: three static files from package data, served with a strict Content-Security-Policy.

The shell is open (DESIGN.md §5 Auth); everything it shows comes from `/v1` with the key the operator enters,
which the browser keeps in sessionStorage. Nothing here renders data: the script builds the page with
`textContent` only, and the CSP forbids inline script, so a hostile payload cannot run.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from aiohttp import web

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC_FILES", "install"]

# name → content type: the only files `/ui/{file}` serves (`/ui/` is index.html).
STATIC_FILES: Final[dict[str, str]] = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The files change with the installed version; a revalidation is cheap and an operator never sees a stale UI.
    "Cache-Control": "no-cache",
}


def read_static_files() -> dict[str, bytes]:
    """The dashboard's files, read from the installed package (they are package data, see pyproject.toml)."""
    folder = resources.files(__package__) / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


def install(app: web.Application) -> None:
    """Add `GET /ui` (a redirect), `GET /ui/` (the shell) and `GET /ui/{file}` (its script and stylesheet)."""
    files = read_static_files()

    def serve(name: str) -> web.Response:
        return web.Response(
            body=files[name], content_type=STATIC_FILES[name], charset="utf-8", headers=SECURITY_HEADERS
        )

    async def redirect(request: web.Request) -> web.Response:
        # A response, not a raised HTTPFound: the request log then records the 302 it was. Relative, so the
        # dashboard also works behind a proxy that mounts the server under a prefix.
        return web.Response(status=302, headers={"Location": "ui/", **SECURITY_HEADERS})

    async def shell(request: web.Request) -> web.Response:
        return serve("index.html")

    async def static_file(request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in files:
            raise web.HTTPNotFound()
        return serve(name)

    app.router.add_get("/ui", redirect)
    app.router.add_get("/ui/", shell)
    app.router.add_get("/ui/{file}", static_file)

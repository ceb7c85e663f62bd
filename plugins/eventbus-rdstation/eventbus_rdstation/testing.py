"""A local RD Station API double: the documented contract (reference specs §3) on an aiohttp app, for tests and demos.

In a test: `double = RDStationDouble(...)`, serve `double.app` (aiohttp's `TestServer` on port 0), point the
destination's `base_url` at it. From a shell: `python -m eventbus_rdstation.testing --port 8999` prints its URL.

Endpoints: `POST /auth/token` (refresh token or single-use code → access token), `POST /platform/events`
(Bearer), `POST /platform/conversions?api_key=` (CONVERSION only). Documented behaviour it follows: the
envelope `{"event_type", "event_family": "CDP", "payload"}`; the 400 INVALID_OPTION example verbatim (for a bad
`event_type`); expired tokens answered 401 with `WWW-Authenticate: Bearer realm="https://api.rd.services/",
error="expired_token", error_description="The access token expired"`; invalid ones 401 UNAUTHORIZED "Invalid
token."; CONVERSION needs `conversion_identifier` and `email`; success `200 {"event_uuid": ...}` on /platform/events.

UNCONFIRMED facts it assumes (RD does not document them, or only third parties do):
- a rate limit of 120 requests a minute per account (`rate_limit`; RD documents it for contacts, not events), the
  429 body `{"error": "Too Many Requests", "max_requests", "current_usage", "remaining_time_ms"}`, one counter per
  account for both endpoints, counted only for authenticated requests; `Retry-After` only when asked
  (`retry_after_header`);
- a refresh returns a NEW refresh token and retires the old one (`rotate_refresh_tokens`, default on);
- authorization codes are single-use (a secondary source; their 60-minute expiry is not modelled);
- /auth/token refusals: 401 with `{"errors": {"error_type": "INVALID_REFRESH_TOKEN" | "EXPIRED_CODE_GRANT" |
  "ACCESS_DENIED", "error_message": ...}}` (the types are seen in RD's clients; status and shape are guesses); a
  grant with neither `refresh_token` nor `code` is a 400 CANNOT_BE_NULL at `$.body.refresh_token` (invented);
- the body of the expired-token 401 (`UNAUTHORIZED`, "The access token expired"), and a bad `api_key` answered
  like a bad token (401 UNAUTHORIZED);
- an `event_family` other than CDP is a 400 INVALID_OPTION at `$.body.event_family` (RD documents only that CDP
  is the one accepted value); a missing payload or required field is CANNOT_BE_NULL, a blank one CANNOT_BE_BLANK,
  at `$.body.payload.<field>` (types RD uses; these paths are guesses);
- a body over 0.2 MB is answered 413 (`REQUEST_TOO_LARGE`), not 400;
- OPPORTUNITY, OPPORTUNITY_LOST and SALE require `email` only; other event types require nothing;
- /platform/conversions answers `200 {"event_uuid"}` like /platform/events, and a non-CONVERSION event there is a
  400 INVALID_OPTION with `valid_options: ["CONVERSION"]`.
Not modelled: OPPORTUNITY "requires an existing contact" (a client's docstring quoting RD): the double accepts an
OPPORTUNITY for any email.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = [
    "EXPIRED_CHALLENGE",
    "MAX_BODY_BYTES",
    "VALID_EVENT_TYPES",
    "ForcedAnswer",
    "RDStationDouble",
    "RecordedRequest",
    "main",
    "validation_errors",
]

MAX_BODY_BYTES = 200_000
VALID_EVENT_TYPES = ("CONVERSION", "OPPORTUNITY", "OPPORTUNITY_LOST", "SALE", "ORDER_PLACED", "ORDER_PLACED_ITEM")
REQUIRED = {
    "CONVERSION": ("conversion_identifier", "email"),
    "OPPORTUNITY": ("email",),
    "OPPORTUNITY_LOST": ("email",),
    "SALE": ("email",),
}
EXPIRED_CHALLENGE = (
    'Bearer realm="https://api.rd.services/", error="expired_token", error_description="The access token expired"'
)
INVALID_TOKEN = {"errors": [{"error_type": "UNAUTHORIZED", "error_message": "Invalid token."}]}
EXPIRED_TOKEN = {"errors": [{"error_type": "UNAUTHORIZED", "error_message": "The access token expired"}]}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: object
    size: int
    received_at: float  # the double's clock


@dataclass(slots=True)
class ForcedAnswer:
    """An answer given instead of the real one, `times` more times, to requests on `path` (None: any)."""

    status: int
    body: bytes
    headers: dict[str, str]
    path: str | None
    times: int


class RDStationDouble:
    """One RD account with one OAuth app and some API keys; `clock` (seconds) drives token expiry and the rate."""

    def __init__(
        self,
        *,
        client_id: str = "rd-client",
        client_secret: str = "rd-secret",
        refresh_token: str = "rd-refresh-0",
        api_keys: Iterable[str] = ("rd-api-key",),
        codes: Iterable[str] = (),
        expires_in: int = 86_400,
        rotate_refresh_tokens: bool = True,
        rate_limit: int = 120,
        rate_window: float = 60.0,
        retry_after_header: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.api_keys = set(api_keys)
        self.codes = set(codes)
        self.expires_in = expires_in
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.retry_after_header = retry_after_header
        self.clock = clock
        self.refresh_tokens = {refresh_token}
        self.access_tokens: dict[str, float] = {}  # token → when it expires (clock seconds)
        self.requests: list[RecordedRequest] = []
        self.events: list[dict[str, object]] = []  # accepted, with "event_uuid" and "via" ("oauth" or "api_key")
        self.counts: Counter[str] = Counter()  # requests per path
        self.statuses: Counter[int] = Counter()  # answers per HTTP status
        self.forced: list[ForcedAnswer] = []
        # Called with each grant before it is answered; when it returns an awaitable, the answer waits for it (a slow
        # token endpoint).
        self.on_token_request: Callable[[dict[str, object]], Awaitable[None] | None] | None = None
        self.echo = False  # print each accepted event (the command line turns it on)
        self._issued = 0
        self._window_start = clock()
        self._window_count = 0
        self.app = web.Application(client_max_size=4 * 1024 * 1024, middlewares=[self._count_status])
        self.app.router.add_post("/auth/token", self._token)
        self.app.router.add_post("/platform/events", self._events)
        self.app.router.add_post("/platform/conversions", self._conversions)

    # Knobs

    def fail_next(
        self,
        status: int,
        body: object = b"",
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Answer the next `times` requests (on `path`, or any) with `status` and `body` (bytes/str raw, else JSON)."""
        raw = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.forced.append(ForcedAnswer(status, raw, dict(headers or {}), path, times))

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired from now on (RD answers them with `expired_token`)."""
        for token in self.access_tokens:
            self.access_tokens[token] = -math.inf

    def reset_rate_limit(self) -> None:
        self._window_start = self.clock()
        self._window_count = 0

    def issue_tokens(self, refresh_token: str | None = None) -> dict[str, object]:
        """What a successful refresh with `refresh_token` answers (as another client would get it), or a new grant."""
        if refresh_token is not None and self.rotate_refresh_tokens:
            self.refresh_tokens.discard(refresh_token)
        self._issued += 1
        access_token = f"rd-access-{self._issued}"
        self.access_tokens[access_token] = self.clock() + self.expires_in
        new_refresh = refresh_token if refresh_token is not None and not self.rotate_refresh_tokens else None
        if new_refresh is None:
            new_refresh = f"rd-refresh-{self._issued}"
            self.refresh_tokens.add(new_refresh)
        return {"access_token": access_token, "expires_in": self.expires_in, "refresh_token": new_refresh}

    # Handlers

    @web.middleware
    async def _count_status(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        response = await handler(request)
        self.statuses[response.status] += 1
        return response

    async def _record(self, request: web.Request) -> tuple[bytes, object]:
        body = await request.read()
        try:
            document: object = json.loads(body) if body else None
        except (ValueError, RecursionError):
            document = None
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                document,
                len(body),
                self.clock(),
            )
        )
        self.counts[request.path] += 1
        return body, document

    def _forced(self, path: str) -> web.Response | None:
        for answer in self.forced:
            if answer.path in (None, path) and answer.times > 0:
                answer.times -= 1
                if answer.times == 0:
                    self.forced.remove(answer)
                return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        return None

    async def _token(self, request: web.Request) -> web.Response:
        _, grant = await self._record(request)
        forced = self._forced(request.path)
        if forced is not None:
            return forced
        if not isinstance(grant, dict):
            return _error(400, {"errors": {"error_type": "BAD_REQUEST", "error_message": "Send a JSON object."}})
        if self.on_token_request is not None:
            waiting = self.on_token_request(grant)
            if inspect.isawaitable(waiting):
                await waiting
        if grant.get("client_id") != self.client_id or grant.get("client_secret") != self.client_secret:
            return _error(401, {"errors": {"error_type": "ACCESS_DENIED", "error_message": "Wrong credentials."}})
        refresh_token, code = grant.get("refresh_token"), grant.get("code")
        if isinstance(refresh_token, str):
            if refresh_token not in self.refresh_tokens:
                message = "The refresh token is invalid or was revoked."
                return _error(401, {"errors": {"error_type": "INVALID_REFRESH_TOKEN", "error_message": message}})
            return web.json_response(self.issue_tokens(refresh_token))
        if isinstance(code, str):
            if code not in self.codes:
                message = "The authorization code is invalid, expired or was used."
                return _error(401, {"errors": {"error_type": "EXPIRED_CODE_GRANT", "error_message": message}})
            self.codes.discard(code)  # single-use
            return web.json_response(self.issue_tokens())
        missing = {"error_type": "CANNOT_BE_NULL", "error_message": "Cannot be null.", "path": "$.body.refresh_token"}
        return _error(400, {"errors": [missing]})

    async def _events(self, request: web.Request) -> web.Response:
        body, document = await self._record(request)
        forced = self._forced(request.path)
        if forced is not None:
            return forced
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expires_at = self.access_tokens.get(token) if scheme.lower() == "bearer" else None
        if expires_at is None:
            return _error(401, INVALID_TOKEN)
        if expires_at <= self.clock():
            return _error(401, EXPIRED_TOKEN, {"WWW-Authenticate": EXPIRED_CHALLENGE})
        return self._accept(body, document, VALID_EVENT_TYPES, via="oauth")

    async def _conversions(self, request: web.Request) -> web.Response:
        body, document = await self._record(request)
        forced = self._forced(request.path)
        if forced is not None:
            return forced
        if request.query.get("api_key") not in self.api_keys:
            return _error(401, INVALID_TOKEN)
        return self._accept(body, document, ("CONVERSION",), via="api_key")

    def _accept(self, body: bytes, document: object, valid_types: tuple[str, ...], *, via: str) -> web.Response:
        limited = self._count_request()
        if limited is not None:
            return limited
        if len(body) > MAX_BODY_BYTES:
            message = "The request body is larger than 0.2 MB."
            return _error(413, {"errors": [{"error_type": "REQUEST_TOO_LARGE", "error_message": message}]})
        errors = validation_errors(document if isinstance(document, dict) else {}, valid_types)
        if errors:
            return _error(400, {"errors": errors})
        assert isinstance(document, dict)
        event_uuid = str(uuid.uuid4())
        self.events.append({"event_uuid": event_uuid, "via": via, **document})
        if self.echo:  # the command line shows what RD Station would have received, one JSON line per event
            print(json.dumps(self.events[-1], ensure_ascii=False), flush=True)
        return web.json_response({"event_uuid": event_uuid})

    def _count_request(self) -> web.Response | None:
        now = self.clock()
        if now - self._window_start >= self.rate_window:
            self._window_start, self._window_count = now, 0
        self._window_count += 1
        if self._window_count <= self.rate_limit:
            return None
        remaining = max(0.0, self._window_start + self.rate_window - now)
        answer = {
            "error": "Too Many Requests",
            "max_requests": self.rate_limit,
            "current_usage": self._window_count,
            "remaining_time_ms": math.ceil(remaining * 1000),
        }
        headers = {"Retry-After": str(math.ceil(remaining))} if self.retry_after_header else {}
        return _error(429, answer, headers)


def validation_errors(document: dict[str, object], valid_types: tuple[str, ...]) -> list[dict[str, object]]:
    """RD's 400 `errors` array for an event envelope; empty when it is valid."""
    errors: list[dict[str, object]] = []
    family = document.get("event_family")
    if family != "CDP":
        errors.append(_invalid_option("$.body.event_family", ("CDP",)))
    event_type = document.get("event_type")
    if event_type not in valid_types:
        errors.append(_invalid_option("$.body.event_type", valid_types))
    payload = document.get("payload")
    if not isinstance(payload, dict):
        errors.append({"error_type": "CANNOT_BE_NULL", "error_message": "Cannot be null.", "path": "$.body.payload"})
        return errors
    for name in REQUIRED.get(event_type, ()) if isinstance(event_type, str) else ():
        value = payload.get(name)
        path = f"$.body.payload.{name}"
        if value is None:
            errors.append({"error_type": "CANNOT_BE_NULL", "error_message": "Cannot be null.", "path": path})
        elif isinstance(value, str) and not value.strip():
            errors.append({"error_type": "CANNOT_BE_BLANK", "error_message": "Cannot be blank.", "path": path})
    return errors


def _invalid_option(path: str, valid: tuple[str, ...]) -> dict[str, object]:
    return {
        "error_type": "INVALID_OPTION",
        "error_message": "Must be one of the valid options.",
        "validation_rules": {"valid_options": list(valid)},
        "path": path,
    }


def _error(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


async def _serve(double: RDStationDouble, host: str, port: int) -> None:
    runner = web.AppRunner(double.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    print(f"RD Station API double on http://{bound_host}:{bound_port}", flush=True)
    print(f"  client_id={double.client_id} refresh_tokens={sorted(double.refresh_tokens)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eventbus_rdstation.testing", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8999)
    parser.add_argument("--client-id", default="rd-client")
    parser.add_argument("--client-secret", default="rd-secret")
    parser.add_argument("--refresh-token", default="rd-refresh-0")
    parser.add_argument("--api-key", action="append", help="an accepted API key, repeatable (default rd-api-key)")
    parser.add_argument("--code", action="append", default=[], help="a single-use authorization code, repeatable")
    parser.add_argument("--expires-in", type=int, default=86_400, help="access token lifetime in seconds")
    parser.add_argument("--no-rotate", action="store_true", help="keep the refresh token on refresh")
    parser.add_argument("--rate-limit", type=int, default=120, help="requests per --rate-window per account")
    parser.add_argument("--rate-window", type=float, default=60.0, help="seconds")
    parser.add_argument("--retry-after", action="store_true", help="send Retry-After with 429 answers")
    args = parser.parse_args(argv)
    double = RDStationDouble(
        client_id=args.client_id,
        client_secret=args.client_secret,
        refresh_token=args.refresh_token,
        api_keys=args.api_key or ["rd-api-key"],
        codes=args.code,
        expires_in=args.expires_in,
        rotate_refresh_tokens=not args.no_rotate,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        retry_after_header=args.retry_after,
    )
    double.echo = True
    try:
        asyncio.run(_serve(double, args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

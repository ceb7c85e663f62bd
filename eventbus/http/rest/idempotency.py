"""`Idempotency-Key` on REST POSTs: the same key with the same body gets the same answer for 24 h, and the
operation runs once; the same key with another body is refused (422); a key still being answered is a 409.

Keys are per caller (a digest of its credentials, never the key itself), method and path. Only successful
answers (2xx) are kept: a refused request may be corrected and sent again under the same key. A secret an answer
reveals (a generated signing secret, a new API key) is not kept: a replay shows `[shown once]` in its place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from eventbus.bus.services import Services
from eventbus.errors import FailedPreconditionError, InvalidArgumentError
from eventbus.http.events import read_body
from eventbus.http.problems import problem_response
from eventbus.http.rest.api import EARLY_BODY, MAX_BODY, SERVICES
from eventbus.store.idempotency import IDEMPOTENCY_KEEP_FOR, IDEMPOTENCY_STALE_AFTER, idempotency_store_of

MAX_KEY = 255
RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


SHOWN_ONCE = "[shown once]"


def _kept(body: bytes, reveals: tuple[str, ...]) -> bytes:
    """The answer as it is kept for replays: the secrets it revealed replaced (a secret is shown once)."""
    if not reveals:
        return body
    document = json.loads(body)
    if isinstance(document, dict):
        for name in reveals:
            value = document.get(name)
            if isinstance(value, dict):
                document[name] = dict.fromkeys(value, SHOWN_ONCE)
            elif isinstance(value, list):
                document[name] = [SHOWN_ONCE for _ in value]
            elif isinstance(value, str):
                document[name] = SHOWN_ONCE
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def with_idempotency(handler: RouteHandler, reveals: tuple[str, ...] = ()) -> RouteHandler:
    async def handle(request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return await handler(request)
        if not 0 < len(key) <= MAX_KEY or not key.isprintable():
            raise InvalidArgumentError.for_field("Idempotency-Key", f"1 to {MAX_KEY} printable characters")
        body = await read_body(request, MAX_BODY)
        services: Services = request.app[SERVICES]
        store = idempotency_store_of(services.bus.store)
        caller = hashlib.sha256((request.headers.get("Authorization") or "").encode()).hexdigest()[:32]
        scope = f"{caller} {request.method} {request.path}"
        digest = hashlib.sha256(body).hexdigest()
        now = services.bus.clock.now()
        held = await store.claim_idempotency_key(
            scope,
            key,
            digest,
            now=now,
            expires_before=now - IDEMPOTENCY_KEEP_FOR,
            stale_before=now - IDEMPOTENCY_STALE_AFTER,
        )
        if held is not None:
            if held.body_sha256 != digest:
                return problem_response(
                    422,
                    "Idempotency key reused",
                    "this Idempotency-Key was used with another body in the last 24 h; use a new key",
                    slug="idempotency-key-reused",
                )
            if held.status is None:
                raise FailedPreconditionError("a request with this Idempotency-Key is still being answered")
            replay = web.Response(status=held.status, body=held.body, content_type=held.content_type or None)
            replay.headers["Idempotent-Replayed"] = "true"
            return replay
        token = EARLY_BODY.set(body)  # read once: the handler gets these bytes again
        try:
            response = await handler(request)
        except BaseException:
            await store.release_idempotency_key(scope, key)
            raise
        finally:
            EARLY_BODY.reset(token)
        if 200 <= response.status < 300 and isinstance(response, web.Response) and isinstance(response.body, bytes):
            await store.answer_idempotency_key(
                scope,
                key,
                status=response.status,
                content_type=response.content_type,
                body=_kept(response.body or b"", reveals),
            )
        else:
            await store.release_idempotency_key(scope, key)
        return response

    return handle

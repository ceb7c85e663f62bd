"""`Idempotency-Key` on REST POSTs: the same key with the same body gets the same answer for 24 h, and the
operation runs once; the same key with another body is refused (422); a key still being answered is a 409.

Keys are per caller (a digest of its credentials, never the key itself), method and path. Only successful
answers (2xx) are kept: a refused request may be corrected and sent again under the same key. A secret an answer
reveals (a generated signing secret, a new API key) is not kept: a replay shows `[shown once]` in its place. An
answer the store fails to keep is still given, and the key is released (see below).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from eventbus.bus.services import Services
from eventbus.errors import FailedPreconditionError, InvalidArgumentError
from eventbus.http.events import read_body
from eventbus.http.problems import problem_response
from eventbus.http.rest.api import EARLY_BODY, MAX_BODY, SERVICES
from eventbus.store.idempotency import (
    IDEMPOTENCY_KEEP_FOR,
    IDEMPOTENCY_STALE_AFTER,
    IdempotencyStore,
    idempotency_store_of,
)

log = structlog.get_logger("eventbus.http")
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
            await _release(store, scope, key)
            raise
        finally:
            EARLY_BODY.reset(token)
        if 200 <= response.status < 300 and isinstance(response, web.Response) and isinstance(response.body, bytes):
            try:
                await store.answer_idempotency_key(
                    scope,
                    key,
                    status=response.status,
                    content_type=response.content_type,
                    body=_kept(response.body or b"", reveals),
                )
            except Exception as exc:
                # The operation ran and this is its answer, so the caller gets it. Keeping it failed (the store
                # refused the write: a full disk, a lost connection), and a claim left without an answer would make
                # every retry under the key a 409 for 5 minutes, then run anyway. Releasing the key makes a retry
                # run the operation again at once, as one without a key would (publishes dedup by source and id;
                # a create makes a second resource). Keeping the answer in the operation's own transaction would be
                # exact, but every service method would then write REST's keys; this failure is rare enough.
                log.warning("idempotency_answer_not_kept", method=request.method, path=request.path, error=str(exc))
                await _release(store, scope, key)
        else:
            await _release(store, scope, key)
        return response

    return handle


async def _release(store: IdempotencyStore, scope: str, key: str) -> None:
    """Forget an unanswered claim. When the store cannot, the request's own answer or error still goes out (not
    this failure): the claim goes stale and a retry takes it over after `IDEMPOTENCY_STALE_AFTER`."""
    try:
        await store.release_idempotency_key(scope, key)
    except Exception as exc:
        log.warning("idempotency_key_not_released", error=str(exc))

"""The pooled outbound HTTP client: SSRF-guarded connects, no redirects, bounded time and response size."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import aiohttp
import yarl
from aiohappyeyeballs import AddrInfoType

from eventbus.egress.ssrf import DestinationPolicy, parse_ip_literal

__all__ = [
    "DestinationRefusedError",
    "EgressClient",
    "EgressError",
    "EgressErrorClass",
    "EgressResponse",
    "parse_retry_after",
]

EgressErrorClass = Literal["timeout", "connect", "dns", "tls", "reset", "ssrf"]

MAX_RESPONSE_HEADERS = 50
MAX_HEADER_VALUE = 1024
MAX_RETRY_AFTER = timedelta(days=30)
_DNS_CACHE_SECONDS = 10

# Reasons the guard refused, for the request running in this context (the happy-eyeballs tasks copy the
# context, so they append to the same list). Lets `post` say "ssrf" even when aiohappyeyeballs has folded
# several per-address errors into one plain OSError.
_REFUSALS: ContextVar[list[str] | None] = ContextVar("eventbus_egress_refusals", default=None)


class DestinationRefusedError(OSError):
    """The connect-time guard refused the address about to be connected to."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"destination refused: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EgressResponse:
    """What a receiver answered, trimmed for storage: capped headers and the first bytes of the body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    duration: float
    truncated: bool


class EgressError(Exception):
    """An exchange that produced no HTTP response; `error_class` says which way it failed."""

    def __init__(self, error_class: EgressErrorClass, message: str, *, duration: float) -> None:
        super().__init__(f"{error_class}: {message}")
        self.error_class: EgressErrorClass = error_class
        self.message = message
        self.duration = duration

    @classmethod
    def from_exception(
        cls, exc: BaseException, *, duration: float, refusals: Sequence[str] = (), timeout: float | None = None
    ) -> EgressError:
        """Classify an aiohttp/OS failure; messages carry host:port at most, never the path or query."""
        reason = refusals[0] if refusals else _refusal_in_chain(exc)
        if reason is not None:
            return cls("ssrf", f"destination refused: {reason}", duration=duration)
        if isinstance(exc, TimeoutError):
            limit = f" within {timeout:g}s" if timeout is not None else ""
            return cls("timeout", f"no complete response{limit}", duration=duration)
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return cls("dns", f"cannot resolve {exc.host}", duration=duration)
        if isinstance(exc, aiohttp.ClientSSLError):
            return cls(
                "tls", f"TLS handshake with {exc.host}:{exc.port} failed: {_os_text(exc.os_error)}", duration=duration
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            return cls(
                "connect", f"cannot connect to {exc.host}:{exc.port}: {_os_text(exc.os_error)}", duration=duration
            )
        if isinstance(exc, aiohttp.InvalidURL):
            return cls("connect", "the URL cannot be requested (invalid or non-canonical host)", duration=duration)
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return cls("reset", "the server closed the connection without a complete response", duration=duration)
        if isinstance(exc, aiohttp.ClientResponseError):
            # aiohttp's parser message spans lines and quotes the offending bytes: one short line is enough.
            return cls("reset", f"malformed response: {' '.join(exc.message.split())[:200]}", duration=duration)
        if isinstance(exc, aiohttp.ClientPayloadError):
            return cls("reset", "the response body was cut off or malformed", duration=duration)
        if isinstance(exc, OSError):
            return cls("reset", f"connection failed: {_os_text(exc)}", duration=duration)
        return cls("reset", f"{type(exc).__name__}", duration=duration)


def _os_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _refusal_in_chain(exc: BaseException) -> str | None:
    """The guard's reason if a DestinationRefusedError is anywhere in `exc`'s cause chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DestinationRefusedError):
            return current.reason
        if isinstance(current, aiohttp.ClientConnectorError) and isinstance(current.os_error, DestinationRefusedError):
            return current.os_error.reason
        current = current.__cause__ or current.__context__
    return None


class _ConnectGuard:
    """aiohttp `socket_factory`: vets the exact sockaddr the socket is then connected to.

    aiohappyeyeballs calls it once per candidate address, right before `loop.sock_connect(sock, sockaddr)`,
    for resolved names and IP-literal URLs alike, so neither a DNS answer that changed since creation time
    nor a literal skipping the resolver gets past it. Only strictly parsed IP addresses pass: `sock_connect`
    then connects to exactly that address without resolving anything again.
    """

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy

    def __call__(self, addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        if family in (socket.AF_INET, socket.AF_INET6):
            reason = self._policy.blocked_reason(str(sockaddr[0]))
        else:
            reason = f"address family {family!r}"
        if reason is not None:
            refusals = _REFUSALS.get()
            if refusals is not None:
                refusals.append(reason)
            raise DestinationRefusedError(reason)
        return socket.socket(family=family, type=type_, proto=proto)


class EgressClient:
    """One pooled aiohttp session for every outbound request, all connects vetted by the destination policy."""

    def __init__(
        self,
        policy: DestinationPolicy,
        *,
        user_agent: str,
        max_connections: int = 512,
        response_body_limit: int = 4096,
        read_cap: int = 64 * 1024,
    ) -> None:
        self.policy = policy
        self._user_agent = user_agent
        self._max_connections = max_connections
        self._response_body_limit = response_body_limit
        self._read_cap = max(read_cap, response_body_limit)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the pooled session (idempotent)."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            # Short cache: the guard vets every connect anyway, this only bounds how stale an answer can be.
            ttl_dns_cache=_DNS_CACHE_SECONDS,
            socket_factory=_ConnectGuard(self.policy),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Identity encoding, so the stored response excerpt is readable without decompressing.
            headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"},
            auto_decompress=False,
            # Receivers must not be able to plant state that rides along with the next delivery.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Never route through a proxy taken from the environment: the guard would vet the proxy, not the receiver.
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def close(self) -> None:
        """Close the session and every pooled connection."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def drop_pooled(self) -> None:
        """The policy changed (a reload of `allow_destinations`): no kept-alive connection vetted under the old one
        is used again. Idle ones close now; those in use close when their request ends instead of going back to the
        pool. The session itself stays (plugins hold it). aiohttp has no public call for this: its pool is the
        connector's `_conns` (idle) and `_acquired` (in use), read defensively."""
        connector = self._session.connector if self._session is not None else None
        for idle in list(getattr(connector, "_conns", {}).values()):
            for protocol, _ in list(idle):
                protocol.close()
        for protocol in list(getattr(connector, "_acquired", ())):
            force_close = getattr(protocol, "force_close", None)  # not on aiohttp's placeholders of connects
            if force_close is not None:
                force_close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The guarded session, for plugin destinations; redirects are theirs to refuse (`allow_redirects=False`)."""
        if self._session is None:
            raise RuntimeError("EgressClient.start() has not been called")
        return self._session

    # The deadline is per endpoint and must also bound the body read, so it is a parameter, not the caller's scope.
    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout: float,  # noqa: ASYNC109
    ) -> EgressResponse:
        """POST `body` and return the answer; connect, send and the capped body read all fit in `timeout`."""
        return await self.request("POST", url, body, headers, timeout=timeout)

    async def request(
        self,
        method: str,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout: float,  # noqa: ASYNC109
        body_limit: int | None = None,
    ) -> EgressResponse:
        """One request; the answer's body is kept up to `body_limit` bytes (default: the excerpt size, 4 KiB)."""
        session = self.session
        started = time.monotonic()
        refusals: list[str] = []
        token = _REFUSALS.set(refusals)
        limit = min(body_limit or self._response_body_limit, self._read_cap)
        try:
            self._refuse_legacy_literal(url, started)
            async with asyncio.timeout(timeout):
                response = await session.request(
                    method,
                    url,
                    data=body or None,
                    headers=dict(headers),
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                )
                try:
                    return await self._read(response, started, limit)
                except BaseException:
                    response.close()
                    raise
        except EgressError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise EgressError.from_exception(
                exc, duration=time.monotonic() - started, refusals=refusals, timeout=timeout
            ) from exc
        except ValueError as exc:  # yarl/aiohttp refuse the URL itself
            raise EgressError("connect", f"the URL cannot be requested: {exc}", duration=0.0) from exc
        finally:
            _REFUSALS.reset(token)

    def _refuse_legacy_literal(self, url: str, started: float) -> None:
        """`127.1`-style hosts never reach the guard (aiohttp rejects them); still report them as SSRF."""
        try:
            host = yarl.URL(url).raw_host
        except ValueError:
            return
        literal = parse_ip_literal(host) if host else None
        if literal is None or literal[1]:
            return
        reason = self.policy.blocked_reason(literal[0])
        if reason is not None:
            raise EgressError("ssrf", f"destination refused: {reason}", duration=time.monotonic() - started)

    async def _read(self, response: aiohttp.ClientResponse, started: float, limit: int) -> EgressResponse:
        received = bytearray()
        while len(received) < self._read_cap:
            chunk = await response.content.read(self._read_cap - len(received))
            if not chunk:
                break
            received += chunk
        complete = response.content.at_eof()
        if complete:
            response.release()  # the connection goes back to the pool
        else:
            response.close()  # drop the rest unread: a huge answer is never buffered
        headers = tuple(
            (name, value[:MAX_HEADER_VALUE]) for name, value in list(response.headers.items())[:MAX_RESPONSE_HEADERS]
        )
        return EgressResponse(
            status=response.status,
            headers=headers,
            body=bytes(received[:limit]),
            duration=time.monotonic() - started,
            truncated=not complete or len(received) > limit,
        )


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A `Retry-After` value (delta-seconds or HTTP-date, RFC 9110 §10.2.3) as a delay, capped at 30 days.

    Negative, past or unparsable values give None: the caller falls back to its own schedule.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        # Compare as integers first: timedelta() overflows on absurd values.
        return timedelta(seconds=min(int(text), int(MAX_RETRY_AFTER.total_seconds())))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    # HTTP-dates are always GMT; the asctime form and "-0000" parse as naive.
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    delay = when - reference
    if delay < timedelta(0):
        return None
    return min(delay, MAX_RETRY_AFTER)

"""The SSRF destination policy: which addresses outbound requests may reach, checked at creation and connect time."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import unquote

import yarl

from eventbus.errors import InvalidArgumentError

__all__ = ["MAX_URL_LENGTH", "DestinationPolicy", "IPAddress", "IPNetwork", "parse_ip_literal"]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT = 2.0
_ALLOW_HINT = "admit a network on purpose with --allow-destination CIDR"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})

_METADATA: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "fd00:ec2::254",  # AWS IPv6 instance metadata
        "100.100.100.200",  # Alibaba Cloud
    )
)


def _nets(*texts: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(text) for text in texts)


# Named ranges first, so the reason says what the address is; anything else not `is_global` is refused after.
# Explicit lists rather than `is_private` alone because ipaddress's tables change between Python patch releases.
_CATEGORIES: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("unspecified", _nets("0.0.0.0/8", "::/128")),
    ("loopback", _nets("127.0.0.0/8", "::1/128")),
    ("link-local", _nets("169.254.0.0/16", "fe80::/10")),
    ("private", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    ("site-local", _nets("fec0::/10")),
    ("carrier-grade NAT", _nets("100.64.0.0/10")),
    ("benchmarking", _nets("198.18.0.0/15", "2001:2::/48")),
    ("documentation", _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20")),
    ("IETF protocol assignment", _nets("192.0.0.0/24")),
    ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
    ("broadcast", _nets("255.255.255.255/32")),
    ("reserved", _nets("240.0.0.0/4")),
    ("discard-only", _nets("100::/64")),
    ("local-use NAT64", _nets("64:ff9b:1::/48")),
)

_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def _embedded_ipv4(address: IPv6Address) -> list[tuple[str, IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries (and routes to), labelled by the mechanism."""
    value = int(address)
    if address in _IPV4_COMPATIBLE and value > 1:
        return [("IPv4-compatible", IPv4Address(value & 0xFFFFFFFF))]
    if address.sixtofour is not None:
        return [("6to4", address.sixtofour)]
    if address.teredo is not None:
        server, client = address.teredo
        return [("Teredo", server), ("Teredo", client)]
    if address in _NAT64_WELL_KNOWN:
        return [("NAT64", IPv4Address(value & 0xFFFFFFFF))]
    if address in _NAT64_LOCAL:
        # RFC 6052: a /48 prefix splits the IPv4 address around the reserved u-octet; /96 keeps it at the end.
        split = ((value >> 64) & 0xFFFF) << 16 | ((value >> 40) & 0xFFFF)
        return [("NAT64", IPv4Address(split)), ("NAT64", IPv4Address(value & 0xFFFFFFFF))]
    return []


def _why_blocked(address: IPAddress) -> str | None:
    """Why `address` is not a public destination, or None when it is."""
    if address in _METADATA:
        return f"cloud metadata address {address}"
    if isinstance(address, IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            # A mapped address is the IPv4 address itself on a dual-stack socket: same verdict.
            inner = _why_blocked(mapped)
            return None if inner is None else f"IPv4-mapped {address} ({inner})"
        for label, embedded in _embedded_ipv4(address):
            inner = _why_blocked(embedded)
            if inner is not None:
                return f"{label} address {address} ({inner})"
        if address in _NAT64_WELL_KNOWN:
            # Globally routable (RFC 6052) and the embedded IPv4 passed; ipaddress files it under reserved ::/8.
            return None
    for label, networks in _CATEGORIES:
        if any(address in network for network in networks):
            return f"{label} address {address}"
    if address.is_reserved:
        return f"reserved address {address}"
    if not address.is_global:
        return f"non-global address {address}"
    return None


def parse_ip_literal(host: str) -> tuple[IPAddress, bool] | None:
    """The address a URL host denotes if it is an IP literal, and whether it is in canonical form.

    Legacy IPv4 spellings (`127.1`, `2130706433`, `0x7f.0.0.1`, `0177.0.0.1`) are what `inet_aton` and many
    resolvers accept, so they are literals too, just not canonical ones.
    """
    text = unquote(host)
    text = text[1:-1] if text.startswith("[") and text.endswith("]") else text.rstrip(".")
    try:
        return ipaddress.ip_address(text), True
    except ValueError:
        pass
    if ":" in text or not text or any(ch.isspace() for ch in text):
        return None
    try:
        packed = socket.inet_aton(text)
    except OSError:
        return None
    return IPv4Address(packed), False


class DestinationPolicy:
    """Refuses non-public destinations unless an allowlisted network (`--allow-destination`) contains them."""

    def __init__(self, allow: Sequence[IPNetwork] = ()) -> None:
        self.allow: tuple[IPNetwork, ...] = tuple(allow)

    def _allowed(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(candidate in network for candidate in candidates for network in self.allow)

    def blocked_reason(self, ip: str | IPAddress) -> str | None:
        """Why a connection to `ip` is refused (a short human string), or None when it is allowed."""
        if isinstance(ip, str):
            try:
                address: IPAddress = ipaddress.ip_address(ip)
            except ValueError:
                # Fail closed: whatever this is, it is not an address the policy can vouch for.
                return "unparseable address"
        else:
            address = ip
        if self._allowed(address):
            return None
        return _why_blocked(address)

    def check_url(self, url: str, *, field: str = "url") -> None:
        """Creation-time check of a destination URL; refusals raise `InvalidArgumentError` naming `field`."""

        def refuse(detail: str) -> InvalidArgumentError:
            return InvalidArgumentError.for_field(field, detail)

        if len(url) > MAX_URL_LENGTH:
            raise refuse(f"must be at most {MAX_URL_LENGTH} characters")
        if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
            raise refuse("must not contain whitespace or control characters")
        if "#" in url:
            raise refuse("must not contain a fragment (#...)")
        try:
            parsed = yarl.URL(url)
            port = parsed.port
        except (ValueError, TypeError):
            raise refuse("is not a valid URL") from None
        if parsed.scheme not in ("http", "https"):
            raise refuse("scheme must be http or https")
        authority = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0] if "://" in url else ""
        if parsed.raw_user is not None or parsed.raw_password is not None or "@" in authority:
            raise refuse("must not contain credentials (user:password@); use extra headers instead")
        host = parsed.raw_host
        if not host:
            raise refuse("must include a host")
        if port is None or not 0 < port <= 65535:
            raise refuse("port must be 1–65535")
        name = host.rstrip(".").lower()
        if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
            if self.blocked_reason("127.0.0.1") and self.blocked_reason("::1"):
                raise refuse(f"{name!r} is a loopback name and is not allowed as a destination; {_ALLOW_HINT}")
            return
        literal = parse_ip_literal(host)
        if literal is None:
            return
        address, canonical = literal
        reason = self.blocked_reason(address)
        if reason is not None:
            raise refuse(f"{reason} is not allowed as a destination; {_ALLOW_HINT}")
        if not canonical:
            # The HTTP client refuses these spellings at send time, so the endpoint could never deliver.
            raise refuse(f"write the IPv4 address in dotted-decimal form ({address})")

    async def resolve_and_check(self, host: str, port: int, *, field: str = "url") -> None:
        """Creation-time DNS check: refuse a host whose every address is blocked.

        A failed or slow lookup is accepted: the connect-time guard still checks whatever the name resolves to
        later, and a receiver whose DNS is briefly down should not be impossible to register.
        """
        literal = parse_ip_literal(host)
        if literal is not None:
            candidates: list[str | IPAddress] = [literal[0]]
        else:
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT):
                    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, TimeoutError, UnicodeError, ValueError):
                return
            candidates = [str(info[4][0]) for info in infos]
        reasons = [self.blocked_reason(candidate) for candidate in candidates]
        if reasons and all(reasons):
            raise InvalidArgumentError.for_field(
                field, f"{host} resolves only to refused addresses ({reasons[0]}); {_ALLOW_HINT}"
            )

    async def check_destination(self, url: str, *, field: str = "url") -> None:
        """Both creation-time checks: the URL's form, then what its host resolves to."""
        self.check_url(url, field=field)
        parsed = yarl.URL(url)
        if parsed.raw_host and parsed.port:  # always true once check_url passed; narrows the types
            await self.resolve_and_check(parsed.raw_host, parsed.port, field=field)

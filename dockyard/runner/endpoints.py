"""Which S3 endpoints an operator-side run may reach: a guard against SSRF.

A Backup's ``storage.s3.endpoint`` is written by whoever may create Backups, and an
inline run connects to it from the operator's pod, which can reach what the tenant's
pods cannot: the cloud's instance metadata (169.254.169.254), the apiserver, the
platform's own services. So, unless the operator's settings allow it:

- the scheme is ``https`` (``DOCKYARD_S3_ALLOW_HTTP`` allows ``http``);
- every address the host resolves to is a public one: private, loopback, link-local,
  shared (100.64/10), reserved, multicast and unspecified addresses are refused unless
  they lie in ``DOCKYARD_S3_ALLOWED_NETWORKS``. One bad address refuses the endpoint.
  An IPv6 address that carries an IPv4 one (IPv4-mapped, IPv4-compatible, NAT64's
  64:ff9b::/96, 6to4's 2002::/16) is judged by the IPv4 address it reaches, and
  local-use NAT64 (64:ff9b:1::/48, RFC 8215) is never public.

The check runs before the client is made (so a refusal is immediate and says why),
and again, through :class:`GuardedResolver`, at every connection the client opens:
a name that resolved to a public address at first cannot rebind to a private one.
An endpoint given as a literal address is checked up front (no resolution), and
aiohttp never asks the resolver about one.

The host is read with yarl, aiohttp's own parser, so it is judged as aiohttp will
connect to it: yarl folds full-width digits and ideographic dots (169 written in
U+FF11 U+FF16 U+FF19, say) into an address literal that ``urlsplit`` leaves as a
"name". A host that is not plain ASCII is refused outright (IDNA-encode it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from dockyard.runner.errors import StorageError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_DEFAULT_PORTS = {"https": 443, "http": 80}


def shown_url(url: str) -> str:
    """``url`` as messages, statuses and metrics show it: scheme, host, port and path,
    without the user info, query or fragment, which may hold credentials."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a URL that does not parse)"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class EndpointRefused(StorageError):
    """The endpoint's scheme or one of its addresses is not allowed by the settings."""

    reason = "StorageRefused"


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    """What the operator's settings allow (the defaults allow public https only)."""

    allow_http: bool = False
    allowed_networks: tuple[Network, ...] = ()
    # What is checked, and the prefix of the settings that allow more, for the messages:
    # the same guard serves webhook URLs (label "webhook URL", DOCKYARD_WEBHOOK_...).
    label: str = "S3 endpoint"
    settings: str = "DOCKYARD_S3"

    @classmethod
    def of(
        cls,
        allow_http: bool,
        networks: Iterable[Any],
        *,
        label: str = "S3 endpoint",
        settings: str = "DOCKYARD_S3",
    ) -> EndpointPolicy:
        return cls(
            allow_http, tuple(ipaddress.ip_network(str(n)) for n in networks), label, settings
        )

    def check_scheme(self, url: str) -> tuple[str, int]:
        """``(host, port)`` of ``url`` as aiohttp connects to them, or ``EndpointRefused``
        for a scheme not allowed or a host that is not plain ASCII."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        allowed = {"https", "http"} if self.allow_http else {"https"}
        if scheme not in allowed:
            raise EndpointRefused(
                f"{self.label} {shown_url(url)} is refused: only https endpoints are allowed "
                f"({self.settings}_ALLOW_HTTP allows http)"
            )
        if not parts.hostname:
            raise EndpointRefused(f"{self.label} {shown_url(url)} names no host")
        if not parts.hostname.isascii():
            raise EndpointRefused(
                f"{self.label} {shown_url(url)} is refused: its host is not plain ASCII (write an "
                "internationalized name in its xn-- form)"
            )
        try:
            parsed = URL(url)
        except ValueError as exc:
            raise EndpointRefused(f"{self.label} {shown_url(url)} is not a valid URL") from exc
        if not parsed.raw_host:
            raise EndpointRefused(f"{self.label} {shown_url(url)} names no host")
        return parsed.raw_host, parsed.port or _DEFAULT_PORTS[scheme]

    def check_address(self, host: str, address: str) -> None:
        """``EndpointRefused`` unless ``address`` is public or in an allowed network."""
        ip = reached(ipaddress.ip_address(address.split("%", 1)[0]))
        if _public(ip):
            return
        if any(ip.version == net.version and ip in net for net in self.allowed_networks):
            return
        raise EndpointRefused(
            f"{self.label} host {host} resolves to {ip}, a {_kind(ip)} address the operator "
            f"does not connect to ({self.settings}_ALLOWED_NETWORKS allows networks)"
        )

    async def check(self, url: str) -> None:
        """Check ``url``'s scheme and every address its host resolves to."""
        host, port = self.check_scheme(url)
        for address in await _resolve(host, port, self.label):
            self.check_address(host, address)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# SIIT's IPv4-translated addresses (RFC 2765), which Python calls global and reserved.
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")


def _public(ip: Address) -> bool:
    """Public unicast: Python 3.11's ``is_global`` passes IPv6 reserved space and the
    deprecated site-local ``fec0::/10``, which some networks still route inside."""
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip in _LOCAL_NAT64:
        return False
    return not (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)


def reached(ip: Address) -> Address:
    """The address a connection to ``ip`` ends at: the IPv4 address an IPv6 one carries
    (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64 or 6to4), else ``ip`` itself.

    Python 3.11 calls NAT64 and 6to4 addresses global whatever they carry, so
    ``64:ff9b::a9fe:a9fe`` would pass as public while a NAT64 gateway takes it to
    169.254.169.254.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _IPV4_TRANSLATED or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _kind(ip: Address) -> str:
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


async def _resolve(host: str, port: int, label: str) -> list[str]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise StorageError(f"{label} host {host} does not resolve: {exc.strerror}") from None
    return sorted({str(info[4][0]) for info in infos})


class AddressRefused(OSError):
    """A connection's host resolved to an address the policy refuses; ``str()`` is the
    whole message, ``host`` and ``kind`` say it without the address (the webhook
    dispatcher shows a tenant that, not the platform's internal addresses)."""

    def __init__(self, message: str, host: str, address: str, kind: str) -> None:
        super().__init__(message)
        self.host = host
        self.address = address
        self.kind = kind


class GuardedResolver(AbstractResolver):
    """A resolver (aiohttp's default, or ``inner``) refusing (``AddressRefused``, an
    ``OSError``) a host with any address not allowed."""

    def __init__(self, policy: EndpointPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            try:
                self._policy.check_address(host, result["host"])
            except EndpointRefused as exc:
                ip = reached(ipaddress.ip_address(result["host"].split("%", 1)[0]))
                raise AddressRefused(exc.message, host, str(ip), _kind(ip)) from None
        return results

    async def close(self) -> None:
        await self._inner.close()

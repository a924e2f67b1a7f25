"""Which client addresses count as one for per-address limits.

An IPv4 address is one client. An IPv6 client is given a whole /64 (one host's, or one
subscriber's, allocation): counting each of its addresses on its own would give an
attacker on one network 2^64 fresh buckets, each with a fresh budget of token reviews.
So per-address limits (``ClientIP`` rules, the token-review cap) count an IPv6 address
by its /64, and an IPv4-mapped one as the IPv4 address it is. Logs and the audit trail
keep the full address.
"""

from __future__ import annotations

import ipaddress
from typing import Final

IPV6_PREFIX: Final = 64


def address_group(address: str) -> str:
    """The address a per-address limit counts ``address`` as (itself if unparsable)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


__all__ = ["IPV6_PREFIX", "address_group"]

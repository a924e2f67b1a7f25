"""Which client addresses count as one for per-address limits.

An IPv4 address is one client. An IPv6 client on the internet is given a whole /64 (a
host's, or a subscriber's, allocation): counting each of its addresses on its own would
give it 2^64 fresh buckets, each with a fresh budget of token reviews. Inside the
cluster it is the other way round: a node's pods share one /64 (Kubernetes' default
IPv6 pod CIDR per node), and each pod is a client of its own. So per-address limits
(``ClientIP`` rules, the token-review cap) count an IPv6 address by its /64 unless it
lies in ``DOCKYARD_CLIENT_NETWORKS`` (by default the private, link-local and loopback
ranges; add a cluster's global pod range there), and an IPv4-mapped one as the IPv4
address it is. Logs and the audit trail keep the full address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

IPV6_PREFIX: Final = 64
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Where each IPv6 address is a client of its own (pods, nodes, this host).
DEFAULT_CLIENT_NETWORKS: Final = ("fc00::/7", "fe80::/10", "::1/128")


def address_group(address: str, exact: Sequence[Network] = ()) -> str:
    """The address a per-address limit counts ``address`` as (itself if unparsable, or
    an IPv6 address inside one of the ``exact`` networks)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if any(ip in network for network in exact):
            return str(ip)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


__all__ = ["DEFAULT_CLIENT_NETWORKS", "IPV6_PREFIX", "Network", "address_group"]

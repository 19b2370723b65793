# Copyright: clusterforge maintainers
# Apache-2.0
"""IPv4 network checks for the cloud inputs, with the standard library only (no netaddr)."""

from __future__ import annotations

import ipaddress
from typing import Any


def cloud_ipv4_network(value: Any) -> str:
    """Return VALUE as a canonical IPv4 network "a.b.c.d/n", or "" when it is not one.

    Host bits must be zero ("10.0.0.0/16", not "10.0.0.5/16"), as AWS requires; a bare
    address is not accepted either, so "203.0.113.7" must be written "203.0.113.7/32".
    """
    if not isinstance(value, str) or "/" not in value:
        return ""
    try:
        return str(ipaddress.IPv4Network(value.strip(), strict=True))
    except ValueError:
        return ""


def cloud_ipv4_subnet_of(value: Any, network: Any) -> bool:
    """True when the IPv4 network VALUE lies inside NETWORK (both canonical CIDRs)."""
    inner, outer = cloud_ipv4_network(value), cloud_ipv4_network(network)
    if not inner or not outer:
        return False
    return ipaddress.IPv4Network(inner).subnet_of(ipaddress.IPv4Network(outer))


def cloud_ipv4_prefixlen(value: Any) -> int:
    """Prefix length of the IPv4 network VALUE, -1 when it is not one."""
    network = cloud_ipv4_network(value)
    return ipaddress.IPv4Network(network).prefixlen if network else -1


class FilterModule:
    """clusterforge cloud network filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "cloud_ipv4_network": cloud_ipv4_network,
            "cloud_ipv4_subnet_of": cloud_ipv4_subnet_of,
            "cloud_ipv4_prefixlen": cloud_ipv4_prefixlen,
        }

"""Whether an address stays on this machine: for the dev door's bind address and `keel up`'s local
operators alike."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """`localhost`, or an IPv4/IPv6 loopback address (brackets allowed); any other name: no."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

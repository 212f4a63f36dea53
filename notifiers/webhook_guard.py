"""Which addresses a webhook may be sent to: no loopback, private or metadata address.

A recipient's webhook URL may come from a user; posting to it from inside the
network must not reach what only the inside can (a server-side request
forgery): loopback, private ranges, link-local (the cloud metadata services
live there), unspecified, multicast, reserved. The check is made on the
addresses the name resolves to, not the name: the name is resolved once,
every address it gives is checked (one refused address refuses the name),
and the connection is made to a checked address, never by resolving the name
again, so a name that changes its answer between the check and the connect
(DNS rebinding) cannot slip through. Spellings such as `2130706433` or
`0177.0.0.1` resolve to 127.0.0.1 and are refused as such. IPv4 addresses
carried in IPv6 (::ffff:127.0.0.1, NAT64 64:ff9b::/96, 6to4, Teredo) are judged
by the IPv4 address.

WEBHOOK_ALLOW_PRIVATE=1 turns the check off (tests, or receivers on a private
network). The refusal is a PermanentError with code "private-address".
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

from notifiers.errors import PermanentError, TransientError

ALLOW_VARIABLE = "WEBHOOK_ALLOW_PRIVATE"
CODE = "private-address"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddrInfo = tuple[int, int, int, str, Any]

METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_class(ip: IPAddress) -> str | None:
    """Why a webhook may not be sent to `ip` ("loopback", "private", ...), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            return address_class(embedded)
    if ip in METADATA:
        return "cloud metadata"
    for name, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return name
    if not ip.is_global:  # 100.64.0.0/10 (shared, carrier NAT), documentation ranges...
        return "non-public"
    return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def check_address(host: str, address: str) -> None:
    """PermanentError when `address` (one that `host` resolved to) is not public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id is no part of it
    found = address_class(ip)
    if found is not None:
        shown = host if host == address else f"{host} ({address})"
        raise PermanentError(
            f"webhook {shown} is a {found} address; refused "
            f"(set {ALLOW_VARIABLE}=1 to allow private addresses)",
            code=CODE,
        )


def resolve(host: str, port: int) -> Sequence[AddrInfo]:
    """The name's addresses, each one checked (one not public refuses them all)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TransientError(
            f"webhook {host} unreachable (cannot resolve: {exc.strerror})", code="connection"
        ) from None
    for *_, sockaddr in found:
        check_address(host, str(sockaddr[0]))
    return found


def connect(
    host: str,
    port: int,
    timeout: float | None,
    source_address: tuple[str, int] | None = None,
) -> socket.socket:
    """A TCP connection to one of the checked addresses of `host` (socket.create_connection,
    but only to the addresses checked: the name is not resolved again)."""
    return connect_to(resolve(host, port), timeout, source_address)


def connect_to(
    found: Sequence[AddrInfo],
    timeout: float | None,
    source_address: tuple[str, int] | None = None,
) -> socket.socket:
    errors: list[OSError] = []
    for family, kind, proto, _, sockaddr in found:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            errors.append(exc)
    if errors:
        raise errors[0]
    raise OSError("the name resolved to no address")

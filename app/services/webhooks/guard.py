"""Which addresses webhooks may reach (SSRF): never our own network. A host is resolved and every
address it resolves to checked; one forbidden address refuses the host (an attacker's name may mix
a public address with a private one). The transport connects only to addresses checked here, on
every new connection, so a name re-pointed after it was accepted (DNS rebinding) is refused too."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata services: refused even where private networks are allowed, since no
# buyer's endpoint is ever one of them and they hand out credentials.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, DigitalOcean, OpenStack…
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)


class RefusedAddress(Exception):
    """The host resolves to an address we do not connect to."""


class Unresolvable(Exception):
    """The host does not resolve."""


def refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why an address may not be connected to, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if address in METADATA:
        return "a cloud metadata address"
    if allow_private:
        return None
    for kind, flag in (
        ("an unspecified", address.is_unspecified),
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a private", address.is_private),
        ("a reserved", address.is_reserved),
    ):
        if flag:
            return f"{kind} address"
    if not address.is_global:
        return "not a public address"
    return None


async def resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Every address `host` resolves to, each checked, in the resolver's order."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise Unresolvable(f"{host} does not resolve ({exc.strerror})") from exc
        # an IPv6 sockaddr may carry a scope (%eth0)
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos))
    for address in addresses:
        why = refusal(address, allow_private=allow_private)
        if why is not None:
            raise RefusedAddress(
                f"{host} resolves to {address}, {why}; webhook endpoints must be on the public internet"
            )
    return [str(a) for a in addresses]

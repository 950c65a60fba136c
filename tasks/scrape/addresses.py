"""Which addresses the scrape may connect to: public ones, and the inside ones params trust.

Loopback, private (RFC 1918, fc00::/7), link-local (169.254.0.0/16, where cloud metadata services
answer, and fe80::/10), shared (100.64.0.0/10), multicast, unspecified and reserved addresses are
inside addresses: a page must not make the scraper, or its browser, fetch from the machine it runs
on or the network around it. scrape.allow_private trusts inside services one by one.

The check is on resolved addresses, and callers connect to the very address that passed it, so a
name that points inside, a redirect hop and a name that resolves differently a second time (DNS
rebinding) are all caught.
"""

from __future__ import annotations

import ipaddress
import socket

from styleforge.core.config import IPAddress, IPNetwork, Service, parse_allow_private


class BlockedAddress(Exception):
    """A fetch would connect to an inside address that scrape.allow_private does not list."""


def inside_kind(address: IPAddress) -> str | None:
    """What kind of inside address this is ('loopback', 'private', ...), or None for a public one."""
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),  # Python counts multicast as global
        ("unspecified", address.is_unspecified),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    )
    for kind, matches in checks:
        if matches:
            return kind
    return None if address.is_global else "non-public"  # 100.64.0.0/10 and the like


class AddressPolicy:
    """Public addresses are allowed; inside ones only when an allow_private entry covers them."""

    def __init__(self, allow_private: list[str]):
        rules = [parse_allow_private(entry) for entry in allow_private]
        self._services = {rule for rule in rules if isinstance(rule, Service)}
        self._networks: list[IPNetwork] = [rule for rule in rules if not isinstance(rule, Service)]

    def refused_kind(self, address: str, port: int) -> str | None:
        """The kind of inside address ('loopback', ...) when connecting to address:port is refused,
        None when it is allowed."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the scope is no part of it
        if ip.version == 6 and ip.ipv4_mapped:  # ::ffff:127.0.0.1 connects to 127.0.0.1
            ip = ip.ipv4_mapped
        kind = inside_kind(ip)
        if kind is None or Service(ip, port) in self._services or any(ip in net for net in self._networks):
            return None
        return kind

    def addresses(self, host: str, port: int) -> list[str]:
        """host's addresses that may be connected to, in the resolver's order. Raises BlockedAddress
        when every address is refused, socket.gaierror when the name does not resolve."""
        allowed: list[str] = []
        refused: list[tuple[str, str]] = []
        for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            address = sockaddr[0]
            if kind := self.refused_kind(address, port):
                refused.append((address, kind))
            elif address not in allowed:
                allowed.append(address)
        if not allowed:
            address, kind = refused[0]
            where = f"{_with_port(address, port)} is" if _same_address(host, address) else (
                f"{_with_port(host, port)} resolves to {address}, which is")
            raise BlockedAddress(f"{where} a {kind} address not listed in scrape.allow_private")
        return allowed


def _with_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _same_address(host: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")) == ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:  # host is a name
        return False

"""Refuse, and record, any socket connection beyond loopback: the test suite's network guard.

Installed in the pytest process by tests/conftest.py and in every Python subprocess through
the sitecustomize.py beside this file (conftest puts this folder on PYTHONPATH). Tests that
need the package index set ALLOW_ENV in their environment; everything else talks to
127.0.0.0/8 and ::1 only.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from typing import Any

LOG_ENV = "DLSTATION_NETGUARD_LOG"
ALLOW_ENV = "DLSTATION_TEST_NETWORK"
# The networks a test may reach; the guard's own tests narrow it to 127.0.0.1/32, so that the
# address they must be refused (127.0.0.2) is still on loopback should the guard ever fail.
NETWORKS_ENV = "DLSTATION_NETGUARD_NETWORKS"
DEFAULT_NETWORKS = "127.0.0.0/8,::1/128"
_INSTALLED = "_dlstation_loopback_guard"


class NonLoopbackConnectionError(PermissionError):
    """A test (or a process it started) tried to reach beyond loopback."""


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks tests may reach: $DLSTATION_NETGUARD_NETWORKS, else 127.0.0.0/8 and ::1."""
    spec = os.environ.get(NETWORKS_ENV) or DEFAULT_NETWORKS
    return [ipaddress.ip_network(part.strip()) for part in spec.split(",") if part.strip()]


def is_loopback(host: str) -> bool:
    """True for the allowed networks (127.0.0.0/8, ::1) and their IPv4-mapped form."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        try:
            resolved = socket.getaddrinfo(host, None)
        except OSError:
            return True  # an unresolvable name reaches nobody; the connect itself will fail
        return all(is_loopback(str(info[4][0])) for info in resolved)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in allowed_networks())


def _check(sock: socket.socket, address: Any) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or os.environ.get(ALLOW_ENV):
        return
    host = str(address[0])
    if is_loopback(host):
        return
    where = f"{host}:{address[1]}"
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as handle:  # noqa: PTH123 - no pathlib this early
            handle.write(f"pid {os.getpid()} ({' '.join(sys.argv)[:200]}) -> {where}\n")
    raise NonLoopbackConnectionError(
        f"test network guard: connection to {where} refused; tests talk to loopback only"
    )


def install() -> None:
    """Wrap socket.connect, connect_ex and sendto; idempotent."""
    cls = socket.socket
    if getattr(cls.connect, _INSTALLED, False):
        return
    connect, connect_ex, sendto = cls.connect, cls.connect_ex, cls.sendto

    def guarded_connect(self: socket.socket, address: Any) -> None:
        _check(self, address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        _check(self, address)
        return connect_ex(self, address)

    def guarded_sendto(self: socket.socket, data: Any, *rest: Any) -> int:
        _check(self, rest[-1])
        return sendto(self, data, *rest)

    for wrapper in (guarded_connect, guarded_connect_ex, guarded_sendto):
        setattr(wrapper, _INSTALLED, True)
    cls.connect = guarded_connect  # type: ignore[method-assign, assignment]
    cls.connect_ex = guarded_connect_ex  # type: ignore[method-assign, assignment]
    cls.sendto = guarded_sendto  # type: ignore[method-assign, assignment]

"""The trainer tests' network guard: only loopback connections are allowed.

The tests run the trainer against a local fake Labelbox and must never reach a real network
(no Labelbox, no model hub). :func:`install` patches the socket module so that connecting to,
or sending to, a non-loopback address, and resolving a name other than this host's own, fails
at once with :class:`NetworkAccessBlocked` (a ``ConnectionRefusedError``, so HTTP clients report
an ordinary connection failure).

This file is named ``sitecustomize`` so that putting its folder on ``PYTHONPATH`` guards every
Python subprocess the tests start (the trainer's stage processes, torchrun's ranks): Python
imports ``sitecustomize`` at start-up, and with ``LBTRAIN_TEST_NETWORK_GUARD=1`` in the
environment the guard installs itself. The pytest process installs it through the fixture in
``tests/trainer/conftest.py``. Code that opens sockets outside Python (C++ extensions) is not
covered; ``HF_HUB_OFFLINE=1`` and a proxy on a closed local port cover the HTTP clients.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

ENV_FLAG = "LBTRAIN_TEST_NETWORK_GUARD"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

_original: dict[str, Any] = {}


class NetworkAccessBlocked(ConnectionRefusedError):
    """A test tried to reach a non-loopback address."""


def is_local_host(host: object) -> bool:
    """True for loopback (and unspecified) addresses and this machine's own names."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%")[0].lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost") or name == "":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name == socket.gethostname().lower()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def _is_numeric(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    try:
        ipaddress.ip_address(str(host).strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


def _check(family: int, address: object) -> None:
    if family not in (socket.AF_INET, socket.AF_INET6):
        return  # Unix sockets, netlink...
    host = address[0] if isinstance(address, tuple) and address else address
    # connect() resolves a name itself (no getaddrinfo hook): only the loopback names pass.
    ok = is_local_host(host) if _is_numeric(host) else str(host).lower() in LOOPBACK_NAMES
    if not ok:
        raise NetworkAccessBlocked(
            f"network access to {address!r} is blocked in the trainer tests (loopback only)"
        )


def install() -> None:
    """Patch :mod:`socket` (idempotent)."""
    if _original:
        return
    cls = socket.socket
    _original.update(
        connect=cls.connect,
        connect_ex=cls.connect_ex,
        sendto=cls.sendto,
        getaddrinfo=socket.getaddrinfo,
    )

    def connect(self: socket.socket, address: Any) -> None:
        _check(self.family, address)
        _original["connect"](self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check(self.family, address)
        result: int = _original["connect_ex"](self, address)
        return result

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        _check(self.family, args[-1])
        result: int = _original["sendto"](self, data, *args)
        return result

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        # A numeric address needs no lookup (connect judges it); a name must be local.
        if not (_is_numeric(host) or is_local_host(host)):
            raise socket.gaierror(
                socket.EAI_NONAME,
                f"name resolution of {host!r} is blocked in the trainer tests (loopback only)",
            )
        return _original["getaddrinfo"](host, *args, **kwargs)

    cls.connect = connect  # type: ignore[method-assign,assignment]
    cls.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    cls.sendto = sendto  # type: ignore[assignment]
    socket.getaddrinfo = getaddrinfo


def uninstall() -> None:
    if not _original:
        return
    cls = socket.socket
    cls.connect = _original.pop("connect")  # type: ignore[method-assign]
    cls.connect_ex = _original.pop("connect_ex")  # type: ignore[method-assign]
    cls.sendto = _original.pop("sendto")  # type: ignore[method-assign]
    socket.getaddrinfo = _original.pop("getaddrinfo")


def installed() -> bool:
    return bool(_original)


if os.environ.get(ENV_FLAG) == "1":
    install()

"""Small network helpers with no policy: free ports, loopback addresses."""

from __future__ import annotations

import ipaddress
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (local stacks, training rendezvous, tests)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_loopback(address: str) -> bool:
    """True when ``address`` is reachable only from this machine."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def browser_url(address: str, port: int, *, default: str = "127.0.0.1") -> str:
    """``http://host:port`` as a browser on this machine opens a server bound to ``address``:
    the wildcards ``0.0.0.0`` and ``::`` (and ``""``: ``default``) are reached via loopback."""
    host = {"": default, "0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

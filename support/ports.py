"""A free TCP port on the loopback, for the servers tests and benchmarks start.

Every private server (Redis, SMTP, Prism, an HTTP stand-in) listens on
127.0.0.1 on a port nobody else uses; the kernel picks one here.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

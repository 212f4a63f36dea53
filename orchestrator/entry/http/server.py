"""The HTTP server: the ASGI app on uvicorn, bound to its own socket.

`make_server` binds (port 0: any free one) with a listen backlog of BACKLOG,
after connecting to Redis, so a bad Redis URL fails before the port is taken;
`serve_forever()` runs it until `shutdown()` or SIGINT/SIGTERM. Its
configuration is the process's `settings.http` (ServerConfig.of), read once
at start-up, unless a test gives its own.
"""

from __future__ import annotations

import math
import socket
import threading

import uvicorn

from orchestrator.core.errors import ConfigurationError
from orchestrator.entry.bootstrap import App
from orchestrator.entry.http.app import build_asgi
from orchestrator.entry.http.config import ServerConfig
from orchestrator.entry.http.door import Door
from orchestrator.entry.http.protocol import MAX_CONNECTIONS, REQUEST_TIMEOUT, LimitedProtocol

BACKLOG = 1024  # connections the kernel queues before accept()
KEEP_ALIVE = 5  # seconds an idle kept-alive connection stays open


class OrchestratorServer:
    """The ASGI app on uvicorn, bound to its socket; `serve_forever()` runs it."""

    def __init__(
        self,
        sock: socket.socket,
        app: App,
        config: ServerConfig,
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        if max_connections < 1:
            raise ConfigurationError("max_connections must be 1 or more")
        if not 0 < request_timeout <= 3600:
            raise ConfigurationError("request_timeout must be over 0 and at most 3600 seconds")
        self.socket = sock
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        self.server_port = self.server_address[1]
        self.config = config
        self.door = Door(app, config)
        self.asgi = build_asgi(self.door)
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.protocol = LimitedProtocol.limited(max_connections, request_timeout)
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(
                self.asgi,
                http=self.protocol,
                ws="none",
                lifespan="off",
                log_config=None,
                access_log=False,
                proxy_headers=False,
                server_header=False,
                backlog=BACKLOG,
                timeout_keep_alive=KEEP_ALIVE,
                timeout_graceful_shutdown=min(30, max(1, math.ceil(request_timeout))),
            )
        )
        self._running = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()

    @property
    def open_connections(self) -> int:
        """Connections being served now (not those refused at the cap)."""
        return self.protocol.open

    def serve_forever(self, poll_interval: float = 0.1) -> None:
        """Serve until `shutdown()` (another thread) or SIGINT/SIGTERM (the main thread).

        A signal is raised again once the server has stopped, so the caller's
        handler (KeyboardInterrupt by default) still runs.
        """
        self._stopped.clear()
        self._running.set()
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._running.clear()
            self._stopped.set()

    def shutdown(self, timeout: float = 30) -> None:
        """Stop serving (open requests get up to the request timeout to finish)."""
        self._uvicorn.should_exit = True
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()


def make_server(
    app: App,
    host: str,
    port: int,
    config: ServerConfig | None = None,
    *,
    max_connections: int = MAX_CONNECTIONS,
    request_timeout: float = REQUEST_TIMEOUT,
) -> OrchestratorServer:
    """Bind the server (port 0: any free one); run it with `serve_forever()`.

    `config`: the process's own (`settings.http`) unless given."""
    config = ServerConfig.of(app.settings) if config is None else config
    app.keys  # connect now: a bad Redis URL fails before the port is bound  # noqa: B018
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
        return OrchestratorServer(
            sock, app, config, max_connections=max_connections, request_timeout=request_timeout
        )
    except BaseException:
        sock.close()
        raise

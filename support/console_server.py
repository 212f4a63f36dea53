"""The HTTP server with the web console, run in a thread for the browser tests.

Why: the browser tests need the real server (the API, the console's routes and
headers) on a free port in the test process, so the test can make tokens and
plant data in the same Redis, while real `orchestrator worker` processes move
the instances. Until the HTTP app mounts the API and the console itself, they
are added here; once it does, they are not added twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.routing import Mount, Route

from orchestrator.entry.bootstrap import App
from orchestrator.entry.http.api import build_api
from orchestrator.entry.http.app import MAX_BODY
from orchestrator.entry.http.console import console_routes
from orchestrator.entry.http.server import OrchestratorServer, make_server


def with_console(server: OrchestratorServer) -> OrchestratorServer:
    """The server's app with the API at /api and the console's routes, unless it has them."""
    routes = server.asgi.router.routes
    if not any(isinstance(r, Mount) and r.path == "/api" for r in routes):
        routes.append(Mount("/api", app=build_api(server.door, MAX_BODY)))
    if not any(isinstance(r, Route) and r.path == "/" for r in routes):
        routes.extend(console_routes())
    return server


@contextmanager
def console_server(app: App, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve the API and the console on a free port; yields the base URL."""
    server = with_console(make_server(app, host, 0))
    thread = threading.Thread(target=server.serve_forever, name="console-server", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=30)
        server.server_close()

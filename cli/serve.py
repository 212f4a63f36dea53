"""`orchestrator serve`: Twilio's delivery receipts and signed events over HTTP."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import typer

from cli.common import app_of

commands = typer.Typer()


@commands.command("serve")
def serve(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."
    ),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port (0: any free one)."),
    max_connections: int = typer.Option(
        1000,
        "--max-connections",
        min=1,
        help="Open connections served at once; any more are answered 503 and closed.",
    ),
    request_timeout: float = typer.Option(
        10.0,
        "--request-timeout",
        min=0.1,
        max=3600,
        help="Seconds a request may take to arrive whole, headers and body; then 408.",
    ),
) -> None:
    """Serve POST /twilio/status, POST /events and GET /health until stopped (Ctrl-C or SIGTERM).

    Uses ORCHESTRATOR_PUBLIC_URL, TWILIO_AUTH_TOKEN(_FILE) and
    ORCHESTRATOR_EVENTS_SECRET(_FILE), read at start-up; an endpoint whose secret is unset
    answers 503.
    Bodies over 256 KiB are refused 413 unread; the listen backlog is 1024.
    """
    from orchestrator.entry.http.server import make_server

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    server = make_server(
        app_of(ctx),
        host,
        port,
        max_connections=max_connections,
        request_timeout=request_timeout,
    )
    config = server.config
    bound_host, bound_port = server.server_address[:2]
    typer.echo(f"serving on http://{bound_host!s}:{bound_port}; Ctrl-C to stop")
    if config.twilio_token is None:
        typer.echo("  /twilio/status off (set TWILIO_AUTH_TOKEN and ORCHESTRATOR_PUBLIC_URL)")
    if config.events_secret is None:
        typer.echo("  /events off (set ORCHESTRATOR_EVENTS_SECRET)")

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()

"""`orchestrator serve`: the HTTP API, Twilio's delivery receipts and signed events."""

from __future__ import annotations

import signal
from types import FrameType

import typer

from cli.common import app_of
from cli.run import log_format_option, log_level_option, start_logging

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
    log_level: str = log_level_option(),
    log_format: str = log_format_option(),
) -> None:
    """Serve the HTTP API and the webhook endpoints until stopped (Ctrl-C or SIGTERM).

    /api: the JSON API (start, emit, list, status, history, notifications, cancel, retry,
    replay, dead letters, recipients, workflows and their graphs, an overview); its
    OpenAPI document at /api/openapi.json. Every /api call needs an API token,
    `Authorization: Bearer TOKEN`, made with `orchestrator tokens create NAME --scope
    read|operate|admin` (shown once, stored hashed; `tokens list`, `tokens revoke ID`):
    read looks; operate also starts, emits, cancels, retries and replays dead letters.

    POST /twilio/status (Twilio's receipts, signed) and POST /events (signed events from
    other systems) use ORCHESTRATOR_PUBLIC_URL, TWILIO_AUTH_TOKEN(_FILE) and
    ORCHESTRATOR_EVENTS_SECRET(_FILE), read at start-up; an endpoint whose secret is unset
    answers 503. GET /health answers {"ok": true}.

    Bodies over 256 KiB are refused 413 unread; the listen backlog is 1024.
    """
    from orchestrator.entry import telemetry
    from orchestrator.entry.http.server import make_server

    start_logging(log_level, log_format)
    app = app_of(ctx)
    telemetry.setup(app.settings, "serve")  # with ORCHESTRATOR_TRACING: spans per request
    server = make_server(
        app,
        host,
        port,
        max_connections=max_connections,
        request_timeout=request_timeout,
    )
    config = server.config
    bound_host, bound_port = server.server_address[:2]
    typer.echo(f"serving on http://{bound_host!s}:{bound_port}; Ctrl-C to stop")
    typer.echo("  /api: needs a token (orchestrator tokens create NAME --scope read)")
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
        telemetry.shutdown()

"""`orchestrator`: the command line, composed of small command modules.

Errors meant for users are one line on stderr and a non-zero exit; a
traceback appears only with --debug. The engine is imported only once a command
runs (cli/__init__.py says how), never for `--help`.
"""

from __future__ import annotations

import os
import re
import sys

import typer

from cli import (
    definitions,
    events,
    instances,
    notifications,
    operations,
    schedules,
    schemas,
    serve,
    tokens,
)
from cli import run as running
from cli.common import GlobalOptions
from cli.subscriptions import subscriptions as webhook_subscriptions

LONG_RUNNING = frozenset({"worker", "serve", "events", "demo"})
_SURROGATE = re.compile("[\ud800-\udfff]")

app = typer.Typer(
    help="Workflows as Python classes, advanced by events in Redis, run by RQ workers.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def main(
    ctx: typer.Context,
    redis_url: str | None = typer.Option(
        None,
        "--redis-url",
        envvar="REDIS_URL",
        help="Redis URL (redis://, rediss://, unix://). Unset: the embedded Redis.",
    ),
    workflows: str | None = typer.Option(
        None,
        "--workflows",
        envvar="ORCHESTRATOR_WORKFLOWS",
        help="Comma-separated modules holding workflow classes (default: workflows).",
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    ctx.obj = GlobalOptions(redis_url=redis_url, workflows=workflows)  # the App: on first use
    if os.environ.get("ORCHESTRATOR_TRACING", "off") != "off" and (
        ctx.invoked_subcommand not in LONG_RUNNING
    ):
        # one span for the command, child of a TRACEPARENT handed to it; what it starts or
        # emits carries the trace on (the long-running ones trace each piece of work instead)
        from orchestrator.entry import telemetry

        name = ctx.invoked_subcommand or ""
        ctx.with_resource(
            telemetry.command(ctx.obj.app.settings, name, os.environ.get("TRACEPARENT"))
        )


for module in (definitions, instances, operations, running, serve, notifications):
    app.registered_commands += module.commands.registered_commands
app.add_typer(notifications.recipients, name="recipients")
app.add_typer(notifications.templates, name="templates")
app.add_typer(notifications.notify, name="notify")
app.add_typer(operations.dead_letters, name="dead-letters")
app.add_typer(schedules.schedules, name="schedules")
app.add_typer(webhook_subscriptions, name="subscriptions")
app.add_typer(schemas.schemas, name="schemas")
app.add_typer(events.events, name="events")
app.add_typer(running.server, name="redis")
app.add_typer(tokens.tokens, name="tokens")
# `server`, the former name of `redis` (too close to `serve`, the HTTP API): hidden, still works
legacy_server = typer.Typer(help="The former name of `orchestrator redis`.")
legacy_server.registered_commands = running.server.registered_commands


@legacy_server.callback()
def _legacy_server() -> None:
    typer.echo("note: `orchestrator server` is now `orchestrator redis`", err=True)


app.add_typer(legacy_server, name="server", hidden=True)


def run() -> None:
    debug = "--debug" in sys.argv[1:]
    try:
        check_arguments(sys.argv[1:])
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        from notifiers.errors import NotifierError
        from orchestrator.core.errors import OrchestratorError

        if isinstance(exc, OrchestratorError | NotifierError):
            typer.echo(f"error: {exc}", err=True)
            sys.exit(1)
        # a bug: say so, briefly, unless asked for the traceback
        import redis

        if _out_of_memory(exc):
            typer.echo(
                "error: Redis is out of memory (used memory is over its maxmemory) and refused "
                "the command; free memory or raise maxmemory, then run it again",
                err=True,
            )
            sys.exit(1)
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            typer.echo(f"error: lost the connection to Redis: {exc}", err=True)
        else:
            typer.echo(
                f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
                err=True,
            )
        sys.exit(70)


def check_arguments(args: list[str]) -> None:
    """Refuse an argument that is not UTF-8 text, before any command sees it.

    Python hands bytes that are not UTF-8 over as lone surrogates ("\\udcff"), which
    every later step (Redis, JSON, the terminal) would choke on."""
    for number, arg in enumerate(args, start=1):
        if not _SURROGATE.search(arg):
            continue
        from orchestrator.core.errors import InputError

        try:
            raw = os.fsencode(arg)
        except UnicodeEncodeError:
            raw = arg.encode("utf-8", "backslashreplace")
        shown = repr(raw if len(raw) <= 60 else raw[:60] + b"...")
        option = arg.partition("=")[0] if arg.startswith("--") and "=" in arg else ""
        if not option and number > 1 and args[number - 2].startswith("-"):
            option = args[number - 2]
        where = f"argument {number} ({option})" if option else f"argument {number}"
        raise InputError(f"{where} is not valid UTF-8 text: {shown}")


def _out_of_memory(exc: BaseException) -> bool:
    """Redis refused a command for want of memory (also when a script's write was refused)."""
    import redis

    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return True
    return isinstance(exc, redis.ResponseError) and "OOM command not allowed" in str(exc)


if __name__ == "__main__":
    run()

"""Commands that run things: `worker`, `demo`, `redis` (`server`: its former, hidden name).

Every long-running command takes `--log-level` and `--log-format` (`log_level_option`,
`log_format_option`, `start_logging`: shared with `events tail`). `demo`, a few seconds
long, runs its worker as a subprocess whose log it shows.
"""

from __future__ import annotations

from typing import Any

import typer

from cli.common import app_of, bounded_int

commands = typer.Typer()
MAX_PROCESSES = 256  # of each kind, on one machine
# One notification worker keeps many sends in flight (packs of up to 50, and a pack's slow
# sends handed over to the process once another job waits: orchestrator.runtime.notify.
# batch); a second one adds capacity where there are cores to spare (README, "Benchmarks").
DEFAULT_NOTIFIERS = 1
# orchestrator.entry.settings.DEFAULT_NOTIFY_THREADS, for --help without importing the engine
# (tests/entry/test_settings.py checks that they agree)
NOTIFY_THREADS_SHOWN = 128
LOG_FORMAT_HELP = (
    "text, or json: one JSON object a line (time, level, logger, message; instance_id, "
    "workflow, state, task, attempt when about an instance or a task's try; trace_id and "
    "span_id with tracing on; exception: a traceback)."
)


def log_level_option(default: str = "INFO", help: str = "") -> Any:
    return typer.Option(
        default,
        "--log-level",
        envvar="ORCHESTRATOR_LOG_LEVEL",
        metavar="LEVEL",
        help=help or "DEBUG, INFO, WARNING or ERROR. Logs go to stderr.",
    )


def log_format_option() -> Any:
    return typer.Option(
        "text",
        "--log-format",
        envvar="ORCHESTRATOR_LOG_FORMAT",
        metavar="FORMAT",
        help=LOG_FORMAT_HELP,
    )


def start_logging(level: str, fmt: str) -> None:
    """Check the two options, naming the one that is wrong, then log as they say."""
    from orchestrator.entry import logs

    if level.upper() not in logs.LEVELS:
        raise typer.BadParameter(f"use one of {', '.join(logs.LEVELS)}", param_hint="--log-level")
    if fmt not in logs.FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(logs.FORMATS)}", param_hint="--log-format")
    logs.configure(level, fmt)


server = typer.Typer(
    help="Manage the embedded Redis server (used when no REDIS_URL is set): "
    "start, stop, status. Not `orchestrator serve`, which is the HTTP API."
)


@commands.command("worker")
def worker(
    ctx: typer.Context,
    burst: bool = typer.Option(
        False, "--burst", help="Run in this process and exit once there is nothing left to do now."
    ),
    processes: str = typer.Option(
        "2", "--processes", "-p", metavar="N", help=f"Task worker processes (1 to {MAX_PROCESSES})."
    ),
    isolation: str = typer.Option(
        "process",
        "--isolation",
        envvar="ORCHESTRATOR_ISOLATION",
        help=(
            "process: run jobs in the worker process itself, as Celery and Dramatiq do "
            "(a task that kills it takes the worker down; it is restarted and the task "
            "retried); job: fork a work-horse for each RQ job, so a crash or leak in a "
            "task ends with its job, at a fork and new Redis connections per job (some ms "
            "more per step). In both, a task past its deadline has its process ended."
        ),
    ),
    notifiers: str = typer.Option(
        str(DEFAULT_NOTIFIERS),
        "--notifiers",
        metavar="N",
        help=f"Notification worker processes (0 to {MAX_PROCESSES}; connections kept; "
        "0: none here).",
    ),
    notify_threads: str | None = typer.Option(
        None,
        "--notify-threads",
        metavar="N",
        help="Notifications each notification worker sends at the same time, each on a "
        "thread with its own SMTP or HTTP connection (1 to 1024; default: "
        f"ORCHESTRATOR_NOTIFY_THREADS, else {NOTIFY_THREADS_SHOWN}). Against a provider "
        "answering in 100 ms, N threads send at most 10*N a second.",
    ),
    accept_risk: bool = typer.Option(
        False,
        "--accept-risk",
        envvar="ORCHESTRATOR_ACCEPT_RISK",
        help="Run on a Redis without append-only persistence or with an evicting policy.",
    ),
    log_level: str = log_level_option(
        help="DEBUG, INFO (start-up, notification retries), WARNING (failed tasks, with "
        "their traceback; restarted processes) or ERROR. Logs go to stderr.",
    ),
    allow_mixed_workflows: bool = typer.Option(
        False,
        "--allow-mixed-workflows",
        envvar="ORCHESTRATOR_ALLOW_MIXED_WORKFLOWS",
        help="Start even though live workers on this namespace serve other workflows or "
        "versions (refused by default: they would dead-letter each other's events).",
    ),
    log_format: str = log_format_option(),
) -> None:
    """Run the applier, the timers and RQ workers until stopped (Ctrl-C or SIGTERM: a busy
    worker finishes its job or, past about a second, leaves it to be tried again)."""
    from orchestrator.entry.connection import check_durability
    from orchestrator.entry.worker import ISOLATIONS, Supervisor, run_burst

    start_logging(log_level, log_format)

    task_processes = bounded_int(processes, "--processes", 1, MAX_PROCESSES)
    notifier_processes = bounded_int(notifiers, "--notifiers", 0, MAX_PROCESSES)
    app = app_of(ctx)
    if notify_threads is not None:
        from dataclasses import replace

        from orchestrator.entry.settings import MAX_NOTIFY_THREADS

        threads = bounded_int(notify_threads, "--notify-threads", 1, MAX_NOTIFY_THREADS)
        app.settings = replace(app.settings, notify_threads=threads)
    app.keys  # connect now, so a bad URL fails before anything starts  # noqa: B018
    if not accept_risk:
        check_durability(app.redis, app.settings.redis_url or "the embedded Redis")
    if not allow_mixed_workflows:
        from orchestrator.runtime import roster

        roster.check(app.redis, app.keys, app.registry, app.settings.lease_ttl)
    if burst:
        from orchestrator.entry import telemetry
        from orchestrator.entry.worker import start_metrics
        from orchestrator.runtime import metrics

        telemetry.setup(app.settings, "burst")  # the supervisor's processes: each its own
        start_metrics(app)
        try:
            applied = run_burst(app)
        finally:
            metrics.uninstall()  # its counts written once more, for /metrics
            telemetry.shutdown()
        typer.echo(f"burst done: {applied} events applied")
        return
    typer.echo(
        f"worker: 1 applier, {task_processes} task ({isolation} isolation) and "
        f"{notifier_processes} "
        "notification worker processes; "
        f"workflows: {', '.join(app.registry.names())}; Ctrl-C to stop",
    )
    if isolation not in ISOLATIONS:
        raise typer.BadParameter(f"use one of {', '.join(ISOLATIONS)}", param_hint="--isolation")
    Supervisor(app.settings, task_processes, notifier_processes, isolation).run()


@commands.command("demo")
def demo(ctx: typer.Context) -> None:
    """Run the three bundled workflows for about five seconds on a private embedded Redis.

    Orders that ship, or fail and are compensated; users who verify their email, verify
    after a reminder, never verify, or fail profile creation; sensor alerts that resolve,
    are acknowledged, escalate (push and email to the next on call), or take repeated
    readings. Day- and minute-long timeouts are played by emitting the timeout event.
    Emails go to a local test mailbox. Then it prints what happened to each instance."""
    from orchestrator.entry.demo import run_demo

    raise typer.Exit(run_demo(app_of(ctx).settings))


@server.command("stop")
def server_stop(ctx: typer.Context) -> None:
    """Stop the embedded Redis server (its data stays in the data folder)."""
    from orchestrator.store.embedded import stop

    data_dir = app_of(ctx).settings.data_dir
    typer.echo("stopped" if stop(data_dir) else f"no embedded Redis is running in {data_dir}")


@server.command("start")
def server_start(ctx: typer.Context) -> None:
    """Start the embedded Redis server (or find it running) and print its URL."""
    from orchestrator.store.embedded import ensure_running

    typer.echo(ensure_running(app_of(ctx).settings.data_dir))


@server.command("status")
def server_status(ctx: typer.Context) -> None:
    """Say whether the embedded Redis is running; exit 3 when it is not."""
    from orchestrator.store.embedded import state, url_for

    data_dir = app_of(ctx).settings.data_dir
    found = state(data_dir)
    typer.echo(f"{found}\ndata folder: {data_dir}\nurl: {url_for(data_dir)}")
    if found != "running":
        raise typer.Exit(3)


@server.command("info")
def server_info(ctx: typer.Context) -> None:
    """Show where the embedded Redis keeps its data and how to reach it."""
    from orchestrator.store.embedded import url_for

    data_dir = app_of(ctx).settings.data_dir
    typer.echo(f"data folder: {data_dir}\nurl: {url_for(data_dir)}")

"""`orchestrator events`: what workflows published (orchestrator.entry.subscriber)."""

from __future__ import annotations

import json
import logging
import signal
from typing import TYPE_CHECKING, Any

import typer

from cli.common import app_of, bounded_int, print_json, table
from cli.run import log_format_option, log_level_option, start_logging

if TYPE_CHECKING:
    from orchestrator.store.published import Published

events = typer.Typer(
    help="The events workflows publish (CloudEvents, one Redis stream per partition): "
    "read them, follow them, see the consumer groups.",
    no_args_is_help=True,
)


@events.command("tail")
def tail(
    ctx: typer.Context,
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing new events until Ctrl-C."
    ),
    types: list[str] = typer.Option(
        [],
        "--type",
        "-t",
        help="Only these types; shell patterns ('order.*'). Repeat for several.",
    ),
    start: str | None = typer.Option(
        None,
        "--from",
        help="Start at: 'start' (everything kept), 'end', an entry id (1765000000000-0), "
        "a moment (2026-12-06T10:00:00Z) or a time ago (15m, 2h, 7d). Unset: the last "
        "--limit events.",
    ),
    limit: str = typer.Option(
        "20", "--limit", "-n", help="Events printed at most, 1 to 10,000 (not with --follow)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="One CloudEvent (JSON) a line, as published."
    ),
    log_level: str = log_level_option(
        "WARNING",
        "DEBUG, INFO (with --follow: when it starts following), WARNING or ERROR. "
        "Logs go to stderr.",
    ),
    log_format: str = log_format_option(),
) -> None:
    """Print published events, oldest first: `time type subject data`, or JSON lines."""
    from orchestrator.entry import subscriber

    start_logging(log_level, log_format)  # events go to stdout; logs to stderr
    app = app_of(ctx)
    count = bounded_int(limit, "--limit", 1, 10_000)
    stopping: list[int] = []
    if follow:
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    found: Any
    if follow:
        logging.getLogger("cli.events").info(
            "following published events%s; Ctrl-C or SIGTERM to stop",
            f" of types {', '.join(types)}" if types else "",
        )
    if start is None and not follow:
        found = subscriber.latest(app.redis, app.keys, count, types)
    else:
        found = subscriber.read(
            app.redis,
            app.keys,
            "end" if start is None else start,
            types,
            follow=follow,
            limit=None if follow else count,
            stop=lambda: bool(stopping),
            block=0.5,
        )
    try:
        for item in found:
            _show(item, as_json)
    except KeyboardInterrupt:
        return


def _show(item: Published, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(item.event, separators=(",", ":"), sort_keys=True))
        return
    data = json.dumps(item.data, separators=(",", ":"), sort_keys=True, default=str)
    typer.echo(f"{item.event.get('time', '-')}  {item.type}  {item.subject}  {data}")


@events.command("groups")
def groups(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """The consumer groups reading the published events, with what each has pending."""
    from orchestrator.store.published import PublishedStreams

    app = app_of(ctx)
    found = PublishedStreams(app.redis, app.keys).group_info()
    if as_json:
        print_json(found)
        return
    if not found:
        typer.echo("no consumer groups (subscribe from the Python client to make one)")
        return
    table(
        ["GROUP", "CONSUMERS", "PENDING", "LAG"],
        [[g["name"], str(g["consumers"]), str(g["pending"]), str(g["lag"])] for g in found],
    )

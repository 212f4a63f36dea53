"""`orchestrator schedules`: start workflows on cron expressions and intervals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from cli.common import app_of, bounded_int, json_argument, print_json, table, when

if TYPE_CHECKING:
    from orchestrator.store.schedules import Stored

schedules = typer.Typer(
    help="Start workflows on cron expressions or intervals, in a time zone; the worker's "
    "applier starts them, once a tick.",
    invoke_without_command=True,
)


@schedules.callback()
def list_schedules(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List the schedules, declared and added, with their next run."""
    if ctx.invoked_subcommand is not None:
        return
    client = app_of(ctx).client.schedules
    found = client.all()
    if as_json:
        print_json([_as_json(s, client.next_runs(s.spec.name, 1)) for s in found])
        return
    if not found:
        typer.echo("no schedules (declare one on a workflow, or `orchestrator schedules add`)")
        return
    rows = []
    for stored in found:
        spec, standing = stored.spec, stored.standing
        upcoming = client.next_runs(spec.name, 1)
        rows.append(
            [
                spec.name,
                spec.workflow,
                spec.describe(),
                "paused" if standing.paused else when(upcoming[0], spec.timezone),
                standing.instance or "-",
                "declared" if spec.declared else "added",
            ]
        )
    table(["NAME", "WORKFLOW", "WHEN", "NEXT", "LAST STARTED", "ORIGIN"], rows)


@schedules.command("add")
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Schedule name (letters, digits, '_', '-')."),
    workflow: str = typer.Option(..., "--workflow", help="The workflow it starts."),
    cron: str | None = typer.Option(
        None,
        "--cron",
        help="Five cron fields, e.g. '0 9 * * MON-FRI' (minute hour day month weekday).",
    ),
    every: str | None = typer.Option(
        None,
        "--every",
        help="An interval instead: 90s, 15m, 12h, 1d (ticks at its multiples since "
        "1970-01-01 UTC).",
    ),
    timezone: str = typer.Option(
        "UTC",
        "--timezone",
        "--tz",
        help="IANA zone the cron fields are read in, e.g. Europe/Paris.",
    ),
    data: str | None = typer.Option(
        None,
        "--input",
        help="Input of each start as JSON, or @file.json ('scheduled_at' is added).",
    ),
    catch_up: str = typer.Option(
        "one",
        "--catch-up",
        help="Ticks missed while no worker ran: skip, one (the latest) or all.",
    ),
    window: str = typer.Option(
        "1d",
        "--catch-up-window",
        help="How far back missed ticks are caught up: 0, 90s, 12h, 7d.",
    ),
    overlap: str = typer.Option(
        "skip",
        "--overlap",
        help="skip: start nothing while its last instance runs; allow: start anyway.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Add a schedule. Its first tick is the first after now."""
    from orchestrator.core.schedule import Schedule

    given = json_argument(data, "--input")
    schedule = Schedule(
        cron=cron,
        every=every,
        timezone=timezone,
        input=given,
        name=name,
        catch_up=catch_up,  # type: ignore[arg-type]  # checked by core.schedule.check
        catch_up_window=window,
        overlap=overlap,  # type: ignore[arg-type]
    )
    client = app_of(ctx).client.schedules
    stored = client.add(workflow, schedule)
    upcoming = client.next_runs(name, 1)
    if as_json:
        print_json(_as_json(stored, upcoming))
    else:
        typer.echo(f"schedule {name}: {stored.spec.describe()}; next {when(upcoming[0], timezone)}")


@schedules.command("show")
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Schedule name."),
    count: str = typer.Option(
        "5", "--next", metavar="N", help="How many next runs to show (1 to 1,000)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """A schedule: what it starts, when, where it stands, and its next runs."""
    how_many = bounded_int(count, "--next", 1, 1000)
    client = app_of(ctx).client.schedules
    stored = client.get(name)
    upcoming = client.next_runs(name, how_many)
    if as_json:
        print_json(_as_json(stored, upcoming))
        return
    spec, standing = stored.spec, stored.standing
    origin = "declared on the workflow" if spec.declared else "added"
    typer.echo(f"schedule   {spec.name} ({origin})")
    typer.echo(f"workflow   {spec.workflow}")
    typer.echo(f"when       {spec.describe()}")
    window = _window(spec.catch_up_window)
    typer.echo(f"catch-up   {spec.catch_up} within {window}; overlap {spec.overlap}")
    typer.echo(f"status     {'paused' if standing.paused else 'active'}")
    last = standing.instance or "-"
    typer.echo(f"started    {standing.started} (skipped {standing.skipped}); last {last}")
    typer.echo("next runs" + ("  none while paused" if not upcoming else ""))
    for tick in upcoming:
        typer.echo(f"  {when(tick, spec.timezone)}")


@schedules.command("pause")
def pause(ctx: typer.Context, name: str = typer.Argument(..., help="Schedule name.")) -> None:
    """Start nothing until resumed."""
    app_of(ctx).client.schedules.pause(name)
    typer.echo(f"schedule {name} paused")


@schedules.command("resume")
def resume(ctx: typer.Context, name: str = typer.Argument(..., help="Schedule name.")) -> None:
    """Start again from the next tick (the paused time is not caught up)."""
    app_of(ctx).client.schedules.resume(name)
    typer.echo(f"schedule {name} resumed")


@schedules.command("remove")
def remove(ctx: typer.Context, name: str = typer.Argument(..., help="Schedule name.")) -> None:
    """Remove a schedule added at run time (a declared one goes with its class)."""
    app_of(ctx).client.schedules.remove(name)
    typer.echo(f"schedule {name} removed")


def _as_json(stored: Stored, upcoming: list[float]) -> dict[str, Any]:
    from orchestrator.core.schedule import tick_text

    spec, standing = stored.spec, stored.standing
    return {
        "name": spec.name,
        "workflow": spec.workflow,
        "cron": spec.cron,
        "every": spec.every,
        "timezone": spec.timezone,
        "input": spec.input,
        "catch_up": spec.catch_up,
        "catch_up_window": spec.catch_up_window,
        "overlap": spec.overlap,
        "origin": "declared" if spec.declared else "added",
        "paused": standing.paused,
        "last_instance": standing.instance,
        "started": standing.started,
        "skipped": standing.skipped,
        "next_runs": [tick_text(t) for t in upcoming],
    }


def _window(seconds: float) -> str:
    from orchestrator.core.durations import show_duration

    return show_duration(seconds) if seconds else "0 (none)"

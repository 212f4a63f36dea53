"""Commands for operators: retry, replay, dead letters."""

from __future__ import annotations

import typer

from cli.common import MAX_LIST, app_of, bounded_int, print_json, progress_bar, table, when

commands = typer.Typer()
dead_letters = typer.Typer(
    help="Events that could not be applied, with the reason; list them or put them back.",
    invoke_without_command=True,
)


@commands.command("retry")
def retry(
    ctx: typer.Context,
    instance_id: str = typer.Argument(..., help="Instance id."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Resume a failed instance: re-run the compensation or task that failed."""
    event_id = app_of(ctx).client.retry(instance_id)
    if as_json:
        print_json({"id": instance_id, "event_id": event_id})
    else:
        typer.echo(f"retrying {instance_id}")


@commands.command("replay")
def replay(
    ctx: typer.Context,
    instance_id: str = typer.Argument(..., help="Instance id."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Rebuild an instance from its history and check it equals the stored state."""
    report = app_of(ctx).client.replay(instance_id)
    if as_json:
        print_json(report.summary())
    elif report.matches:
        typer.echo(
            f"{instance_id}: {report.events} events replayed; the result equals the stored state"
        )
    else:
        typer.echo(f"{instance_id}: replay DIVERGES from the stored state")
        if report.first_divergence:
            d = report.first_divergence
            typer.echo(
                f"  first at seq {d['seq']} ({d['event']}): recorded {d['recorded']}, "
                f"rebuilt {d['rebuilt']}"
            )
        for name, (stored, rebuilt) in report.differences.items():
            typer.echo(f"  {name}: stored {stored!r}, rebuilt {rebuilt!r}")
    if not report.matches:
        raise typer.Exit(3)


@dead_letters.callback()
def list_dead_letters(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
    limit: str = typer.Option(
        "100", "--limit", metavar="N", help=f"At most this many (1 to {MAX_LIST:,}), oldest first."
    ),
) -> None:
    """List the dead letters, oldest first."""
    if ctx.invoked_subcommand is not None:
        return
    letters = app_of(ctx).client.dead_letters.read(bounded_int(limit, "--limit", 1, MAX_LIST))
    if as_json:
        print_json(letters)
        return
    if not letters:
        typer.echo("no dead letters")
        return
    rows: list[list[str]] = []
    for letter in letters:
        event = letter["event"]
        known = isinstance(event, dict)
        rows.append(
            [
                str(letter["id"]),
                when(letter["at"]),
                str(event.get("type")) if known else "?",
                str(event.get("instance") or "-") if known else "?",
                str(letter["reason"]),
            ]
        )
    table(["ID", "AT", "EVENT", "INSTANCE", "REASON"], rows)


@dead_letters.command("replay")
def replay_dead_letters(
    ctx: typer.Context,
    letter_ids: list[str] | None = typer.Argument(None, help="Dead letter ids."),
    everything: bool = typer.Option(False, "--all", help="Put every dead letter back."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Put dead letters back into their inboxes, to be applied again."""
    if bool(letter_ids) == everything:
        from orchestrator.core.errors import InputError

        raise InputError("give dead letter ids or --all (one of the two)")
    with progress_bar("putting back") as progress:
        replayed = app_of(ctx).client.dead_letters.replay(
            None if everything else letter_ids, progress=None if as_json else progress
        )
    if as_json:
        print_json({"replayed": replayed})
    else:
        typer.echo(f"{len(replayed)} dead letter(s) put back")

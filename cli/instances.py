"""Commands about instances: start, emit, status, list, history, cancel."""

from __future__ import annotations

import json
from typing import Any

import typer

from cli.common import (
    MAX_LIST,
    app_of,
    bounded_int,
    epochs_as_times,
    info,
    json_argument,
    key_argument,
    print_json,
    table,
    when,
)

commands = typer.Typer()


@commands.command("start")
def start(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Workflow name (see `orchestrator workflows`)."),
    data: str | None = typer.Option(None, "--input", help="Input as JSON, or @file.json."),
    instance_id: str | None = typer.Option(None, "--id", help="Instance id (default: new)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Start an instance of a workflow and print its id (alone: `ID=$(orchestrator start ...)`)."""
    given = json_argument(data, "--input")  # before connecting: bad input needs no Redis
    new_id = app_of(ctx).client.start(name, given, instance_id=instance_id)
    if as_json:
        print_json({"id": new_id, "workflow": name})
    else:
        typer.echo(new_id)


@commands.command("emit")
def emit(
    ctx: typer.Context,
    event_type: str = typer.Argument(..., help="Event type, e.g. order.placed."),
    instance_id: str | None = typer.Option(None, "--instance", "-i", help="Instance id."),
    old_instance_id: str | None = typer.Option(
        None, "--workflow", "-w", hidden=True, help="The former name of --instance."
    ),
    key: str | None = typer.Option(None, "--key", "-k", help="Business key NAME=VALUE."),
    task: str | None = typer.Option(
        None, "--task", help="For task.completed/task.failed: the state or task it answers."
    ),
    data: str | None = typer.Option(None, "--data", help="Event data as JSON, or @file.json."),
    event_id: str | None = typer.Option(
        None, "--id", help="Event id; an id already applied is not applied twice."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Append an event for an instance, or start one with an event type that starts a workflow.

    Prints the instance's id alone on standard output (`ID=$(orchestrator emit ...)`);
    what happened goes to standard error."""
    given, found_by = json_argument(data, "--data"), key_argument(key)  # before connecting
    if instance_id and old_instance_id:
        from orchestrator.core.errors import InputError

        raise InputError("give --instance once (--workflow is its former name)")
    emitted = app_of(ctx).client.emit(
        event_type,
        given,
        instance_id=instance_id or old_instance_id,
        key=found_by,
        task=task,
        event_id=event_id,
    )
    if as_json:
        print_json(
            {
                "event_id": emitted.event_id or None,
                "instance": emitted.instance_id or None,
                "started": emitted.started,
                "note": emitted.note or None,
            }
        )
    elif emitted.note:
        info(emitted.note)
    else:
        if emitted.started:
            info(f"started {emitted.instance_id}")
        else:
            info(f"{emitted.event_id} -> {emitted.instance_id}")
        typer.echo(emitted.instance_id)


SHOWN = 10  # branches and steps to undo that `status` names, at most (a map may have 10,000)


@commands.command("status")
def status(
    ctx: typer.Context,
    instance_id: str = typer.Argument(..., help="Instance id."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Show where an instance stands."""
    from orchestrator.core.failures import failure_text, last_failure

    instance = app_of(ctx).client.status(instance_id)
    summary = instance.summary()
    if as_json:
        print_json(summary)
        return
    typer.echo(f"{instance.id}  {instance.workflow} v{instance.version}")
    typer.echo(f"  state:   {instance.state or '-'}")
    typer.echo(f"  status:  {instance.status}")
    if instance.reason:
        typer.echo(f"  reason:  {instance.reason}")
    failed = last_failure(app_of(ctx).client.history(instance_id))
    if failed:
        data = failed["event"]["data"]
        typer.echo(
            f"  last failure: {failure_text(data)} (state {data.get('state')}, "
            f"try {data.get('attempt')}, {when(failed['event']['at'])})"
        )
    if instance.parent is not None:
        typer.echo(
            f"  parent:  {instance.parent.get('instance')} (step {instance.parent.get('state')})"
        )
    if instance.children:
        shown = list(instance.children.items())[:SHOWN]
        more = (
            f" and {len(instance.children) - SHOWN} more" if len(instance.children) > SHOWN else ""
        )
        typer.echo("  children: " + ", ".join(f"{step} {cid}" for step, cid in shown) + more)
    if instance.fan is not None:
        fan = instance.fan
        running = ", ".join(sorted(fan.tries)[:SHOWN]) + (" ..." if len(fan.tries) > SHOWN else "")
        typer.echo(
            f"  branches: {len(fan.results)} of {fan.total} completed, "
            f"{len(fan.failures)} failed, running: {running or '-'}"
        )
    if instance.compensations:
        newest = list(reversed(instance.compensations))
        more = f" and {len(newest) - SHOWN} more" if len(newest) > SHOWN else ""
        typer.echo(f"  to undo: {', '.join(newest[:SHOWN])}{more}")
    if instance.parked:
        typer.echo(f"  parked:  {', '.join(e.type for e in instance.parked)}")
    typer.echo(f"  created: {when(instance.created_at)}   updated: {when(instance.updated_at)}")
    context = json.dumps(summary["context"], indent=2, sort_keys=True, default=str)
    typer.echo("  context: " + context.replace("\n", "\n  "))


@commands.command("list")
def list_instances(
    ctx: typer.Context,
    workflow: str | None = typer.Option(None, "--workflow", "-w", help="Only this workflow."),
    state: str | None = typer.Option(None, "--state", help="Only instances in this state."),
    status: str | None = typer.Option(None, "--status", help="Only this status."),
    limit: str = typer.Option(
        "50", "--limit", metavar="N", help=f"At most this many (1 to {MAX_LIST:,}), newest first."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List instances, newest first."""
    count = bounded_int(limit, "--limit", 1, MAX_LIST)
    client = app_of(ctx).client
    found = client.list(workflow=workflow, state=state, status=status, limit=count)
    if as_json:
        print_json([i.summary() for i in found])
        return
    if not found:
        typer.echo("no instances")
    else:
        table(
            ["ID", "WORKFLOW", "STATE", "STATUS", "UPDATED"],
            [[i.id, i.workflow, i.state or "-", i.status, when(i.updated_at)] for i in found],
        )
    expired = client.expired_count()
    if expired:
        typer.echo(f"({expired} finished instance(s) expired under the retention policy)")


@commands.command("history")
def history(
    ctx: typer.Context,
    instance_id: str = typer.Argument(..., help="Instance id."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """Show every event applied to an instance, what it did, and the effects it caused."""
    entries: list[dict[str, Any]] = app_of(ctx).client.history(instance_id)
    if as_json:
        print_json(entries)
        return
    if not entries:
        typer.echo("no history")
        return
    rows: list[list[str]] = []
    for entry in entries:
        move = f"{entry['from'] or '-'} -> {entry['to'] or '-'}"
        details: list[str] = [f"({entry['note']})"] if entry["note"] else []
        details += [f"-> {epochs_as_times(str(effect))}" for effect in entry["effects"]]
        rows.append(
            [
                str(entry["seq"]),
                when(entry["event"]["at"]),
                str(entry["event"]["type"]),
                str(entry["outcome"]),
                move,
                "\n".join(details),
            ]
        )
    table(["SEQ", "AT", "EVENT", "OUTCOME", "TRANSITION", "DETAILS"], rows)


@commands.command("cancel")
def cancel(
    ctx: typer.Context,
    instance_id: str = typer.Argument(..., help="Instance id."),
    reason: str | None = typer.Option(None, "--reason", help="Why; kept in the history."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Cancel an instance: undo its finished steps, then end it in its cancel state."""
    event_id = app_of(ctx).client.cancel(instance_id, reason)
    if as_json:
        print_json({"id": instance_id, "event_id": event_id})
    else:
        typer.echo(f"cancelling {instance_id}")

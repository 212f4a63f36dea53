"""`orchestrator subscriptions`: published events POSTed to URLs, signed per the Standard
Webhooks spec (orchestrator.runtime.relay delivers them; `orchestrator worker` runs it).

A subscription names the environment variable holding its secret (`--secret-env`),
never the secret: `add` checks the variable here, and the worker reads it from its own
environment. Nothing here prints a secret but `new-secret`, whose whole point it is.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import typer

from cli.common import MAX_LIST, app_of, bounded_int, print_json, table, when

if TYPE_CHECKING:
    from orchestrator.entry.subscriptions import Subscriptions

subscriptions = typer.Typer(
    help="Webhook subscriptions: published events POSTed to your URLs, signed per the "
    "Standard Webhooks spec, retried, in order; the worker delivers them.",
    no_args_is_help=True,
)


def _client(ctx: typer.Context) -> Subscriptions:
    from orchestrator.entry.subscriptions import Subscriptions

    app = app_of(ctx)
    return Subscriptions(app.redis, app.keys, environ=os.environ)


@subscriptions.command("add")
def add(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="Where to POST the events (http or https)."),
    events: list[str] = typer.Option(
        ...,
        "--events",
        help="Event types to deliver, shell-style ('order.*'); repeat for more.",
    ),
    secret_env: str = typer.Option(
        ...,
        "--secret-env",
        metavar="NAME",
        help="The environment variable holding the signing secret (whsec_...; see "
        "`new-secret`); set it here and in the worker's environment.",
    ),
    subscription_id: str | None = typer.Option(
        None, "--id", help="The subscription's id (default: generated)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Add a subscription: from now on, the events of these types are delivered to URL."""
    found = _client(ctx).add(url, events, secret_env, id=subscription_id)
    if as_json:
        print_json(_client(ctx).get(found.id).summary())
        return
    typer.echo(
        f"subscription {found.id}: {', '.join(found.patterns)} -> {found.url} "
        f"(signed with ${found.secret_env})"
    )


@subscriptions.command("list")
def list_subscriptions(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """The subscriptions, with what they delivered, what is pending and what is dead."""
    found = _client(ctx).list()
    if as_json:
        print_json([info.summary() for info in found])
        return
    if not found:
        typer.echo("no subscriptions (`orchestrator subscriptions add URL --events ...`)")
        return
    rows = []
    for info in found:
        sub, state = info.subscription, info.subscription.state
        rows.append(
            [
                sub.id,
                sub.url,
                ",".join(sub.patterns),
                sub.secret_env,
                str(state.delivered),
                str(info.pending),
                str(info.dead),
                _error(state.last_error),
            ]
        )
    table(["ID", "URL", "EVENTS", "SECRET VAR", "DELIVERED", "PENDING", "DEAD", "LAST ERROR"], rows)


@subscriptions.command("remove")
def remove(
    ctx: typer.Context,
    subscription: str = typer.Argument(..., help="Subscription id."),
) -> None:
    """Remove a subscription, with its place in the events and its dead letters."""
    _client(ctx).remove(subscription)
    typer.echo(f"subscription {subscription} removed")


@subscriptions.command("dead-letters")
def dead_letters(
    ctx: typer.Context,
    subscription: str = typer.Argument(..., help="Subscription id."),
    limit: str = typer.Option("100", "--limit", help=f"Show at most N (1 to {MAX_LIST:,})."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """The events a subscription could not deliver, oldest first, and why."""
    letters = _client(ctx).dead_letters(subscription, bounded_int(limit, "--limit", 1, MAX_LIST))
    if as_json:
        print_json([letter.summary() for letter in letters])
        return
    if not letters:
        typer.echo(f"no dead letters for subscription {subscription}")
        return
    table(
        ["EVENT ID", "TYPE", "ATTEMPTS", "STATUS", "AT", "ERROR"],
        [
            [
                x.event_id,
                x.type,
                str(x.attempts),
                "-" if x.status is None else str(x.status),
                when(x.at),
                ("(queued for redelivery) " if x.queued else "") + x.error,
            ]
            for x in letters
        ],
    )


@subscriptions.command("redeliver")
def redeliver(
    ctx: typer.Context,
    subscription: str = typer.Argument(..., help="Subscription id."),
    ids: list[str] | None = typer.Argument(None, help="Event ids of dead letters."),
    every: bool = typer.Option(False, "--all", help="Every dead letter of the subscription."),
) -> None:
    """Deliver dead letters again, in the order they failed (the worker sends them before
    the subscription's next event)."""
    queued = _client(ctx).redeliver(subscription, ids or (), all=every)
    typer.echo(f"{len(queued)} dead letters queued for redelivery to {subscription}")


@subscriptions.command("new-secret")
def make_secret() -> None:
    """Print a fresh signing secret (whsec_...) to put in the environment (not stored)."""
    from orchestrator.entry.subscriptions import new_secret

    typer.echo(new_secret())


def _error(error: dict[str, Any] | None) -> str:
    if not error:
        return "-"
    status = error.get("status")
    text = str(error.get("error", ""))
    return f"{when(error.get('at'))} {status or ''} {text}".replace("  ", " ").strip()

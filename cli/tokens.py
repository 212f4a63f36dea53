"""`orchestrator tokens`: the API tokens of `orchestrator serve` (create, list, revoke).

A token is printed once, when it is made; Redis keeps only its SHA-256
(orchestrator.store.tokens). Scopes are ordered: read < operate < admin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from cli.common import app_of, print_json, table, when

if TYPE_CHECKING:
    from orchestrator.store.tokens import Tokens

tokens = typer.Typer(
    help="API tokens for `orchestrator serve`'s /api: create (shown once), list, revoke.",
    no_args_is_help=True,
)
AS_JSON = typer.Option(False, "--json", help="Print JSON.")


def _tokens(ctx: typer.Context) -> Tokens:
    from orchestrator.store.tokens import Tokens

    app = app_of(ctx)
    return Tokens(app.redis, app.keys)


@tokens.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A name for it, e.g. who or what uses it."),
    scope: str = typer.Option(
        ...,
        "--scope",
        help="read (look), operate (also start, emit, cancel, retry, replay dead letters) "
        "or admin (everything).",
    ),
    as_json: bool = AS_JSON,
) -> None:
    """Make a token and print it, once: it is stored hashed and cannot be shown again."""
    from orchestrator.store.tokens import check_scope

    check_scope(scope)  # before connecting: a bad scope needs no Redis
    made, token = _tokens(ctx).create(name, scope)
    if as_json:
        print_json({**made.view(), "token": token})
        return
    typer.echo(token)
    typer.echo(
        f"token {made.id} ({made.name}, scope {made.scope}): keep it now, it is not shown "
        "again; send it as `Authorization: Bearer TOKEN`",
        err=True,
    )


@tokens.command("list")
def list_tokens(ctx: typer.Context, as_json: bool = AS_JSON) -> None:
    """List the tokens: id, name, scope, when made and last used (never the token)."""
    found = _tokens(ctx).list()
    if as_json:
        print_json([t.view() for t in found])
        return
    if not found:
        typer.echo("no tokens")
        return
    table(
        ["ID", "NAME", "SCOPE", "CREATED", "LAST USED"],
        [[t.id, t.name, t.scope, when(t.created), when(t.last_used)] for t in found],
    )


@tokens.command("revoke")
def revoke(
    ctx: typer.Context,
    token_id: str = typer.Argument(..., help="The token's id (see `orchestrator tokens list`)."),
    as_json: bool = AS_JSON,
) -> None:
    """Revoke a token: requests with it are refused from now on."""
    gone = _tokens(ctx).revoke(token_id)
    if as_json:
        print_json({"revoked": gone.id, "name": gone.name})
    else:
        typer.echo(f"revoked {gone.id} ({gone.name})")

"""Commands about workflow definitions: `workflows` and `graph` (no Redis needed)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer

from cli.common import app_of, print_json

commands = typer.Typer()


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


@commands.command("workflows")
def workflows(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List the workflows loaded from the workflow modules, with their versions."""
    registry = app_of(ctx).registry
    rows: list[dict[str, Any]] = [
        {
            "name": d.name,
            "version": d.version,
            "versions": registry.versions(d.name),
            "states": list(d.states),
            "initial": d.initial,
            "starts_on": sorted(d.starts_on),
            "correlate_by": d.correlate_by,
            "description": d.description,
        }
        for d in registry.latest()
    ]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        starts = f"  starts on: {', '.join(row['starts_on'])}" if row["starts_on"] else ""
        typer.echo(f"{row['name']} v{row['version']}  {row['description']}{starts}")


@commands.command("graph")
def graph(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Workflow name."),
    fmt: GraphFormat = typer.Option(GraphFormat.mermaid, "--format", help="Output format."),
    version: int | None = typer.Option(None, "--version", help="Version (default newest)."),
) -> None:
    """Print a workflow's state machine as Mermaid (default) or Graphviz DOT."""
    from orchestrator.core.graph import dot, mermaid

    definition = app_of(ctx).registry.get(name, version)
    typer.echo(mermaid(definition) if fmt is GraphFormat.mermaid else dot(definition), nl=False)

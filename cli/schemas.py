"""`orchestrator schemas`: the schemas of published events, checked against the versions
recorded in a folder of JSON files committed with the project (no Redis needed).

    orchestrator schemas list                the published types and where they stand
    orchestrator schemas show order.shipped  one type's schema and fields
    orchestrator schemas check [--write]     refuse incompatible changes (CI); record new ones

The folder is `schemas/` in the current folder, `--dir`, or ORCHESTRATOR_SCHEMAS_DIR;
the rules are in orchestrator.runtime.compatibility.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cli.common import app_of, bounded_int, print_json, table

if TYPE_CHECKING:
    from orchestrator.runtime.compatibility import Schema, TypeReport

SCHEMAS_DIR_ENV = "ORCHESTRATOR_SCHEMAS_DIR"
# orchestrator.entry.schema_registry.DEFAULT_DIR, named in the help without importing the
# engine (tests/cli/test_lazy_imports.py checks that they agree)
DEFAULT_DIR_SHOWN = "schemas"

schemas = typer.Typer(
    help="Schemas of published events: list them, show one, check them against the "
    "versions recorded in a folder of JSON files (schemas/<type>/v<N>.json).",
    no_args_is_help=True,
)


def _folder_option() -> Any:
    return typer.Option(
        None,
        "--dir",
        envvar=SCHEMAS_DIR_ENV,
        metavar="FOLDER",
        help=f"The folder of recorded schemas (default: {DEFAULT_DIR_SHOWN}/ in the current "
        f"folder; or {SCHEMAS_DIR_ENV}).",
    )


@schemas.command("list")
def list_schemas(
    ctx: typer.Context,
    folder: Path | None = _folder_option(),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """The published event types of the loaded workflows: who publishes them, the declared
    and recorded versions, and their status (recorded, new, new version, changed...)."""
    from orchestrator.entry.schema_registry import DEFAULT_DIR, declarations, read_recorded
    from orchestrator.runtime.compatibility import assess

    where = folder or DEFAULT_DIR
    reports = assess(declarations(app_of(ctx).registry), read_recorded(where))
    if as_json:
        print_json([_row(report) for report in reports])
        return
    if not reports:
        typer.echo("no published event types (declare `publishes` on a workflow)")
        return
    table(
        ["TYPE", "WORKFLOWS", "DECLARED", "RECORDED", "STATUS"],
        [
            [
                report.type,
                ", ".join(report.workflows),
                _versions(report.declared_versions),
                _versions(report.recorded),
                str(report.status),
            ]
            for report in reports
        ],
    )


@schemas.command("show")
def show(
    ctx: typer.Context,
    event_type: str = typer.Argument(..., metavar="TYPE", help="Published event type."),
    version: str | None = typer.Option(
        None,
        "--version",
        metavar="N",
        help="A recorded (or declared) version (default: the declared one).",
    ),
    folder: Path | None = _folder_option(),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """One published type's schema: its fields with their types, and the JSON Schema."""
    from orchestrator.core.errors import InputError
    from orchestrator.entry.schema_registry import DEFAULT_DIR, declarations, path_of, read_recorded
    from orchestrator.runtime.compatibility import assess, fields

    wanted = None if version is None else bounded_int(version, "--version", 1, 999_999_999)
    where = folder or DEFAULT_DIR
    recorded = read_recorded(where)
    reports = {r.type: r for r in assess(declarations(app_of(ctx).registry), recorded)}
    report = reports.get(event_type)
    kept = recorded.get(event_type, {})
    if report is None and not kept:
        known = ", ".join(sorted(reports.keys() | recorded.keys()))
        raise InputError(
            f"unknown published event type {event_type!r} "
            f"(known: {known or 'none; no loaded workflow declares publishes'})"
        )
    number, source, schema = _choose(event_type, wanted, report, kept)
    file = path_of(where, event_type, number) if source == "recorded" else None
    found = fields(schema)
    if as_json:
        print_json(
            {
                "type": event_type,
                "version": number,
                "source": source,
                "file": str(file) if file else None,
                **(_row(report) if report else {"recorded": sorted(kept)}),
                "fields": [
                    {
                        "name": f.path,
                        "type": f.type,
                        "required": f.required,
                        "description": f.description,
                    }
                    for f in found
                ],
                "schema": schema,
            }
        )
        return
    typer.echo(f"type         {event_type}")
    origin = f"recorded in {file}" if file else _declared_by(report, number)
    typer.echo(f"version      {number} ({origin})")
    typer.echo(f"recorded     {_versions(sorted(kept))}")
    if report is not None:
        typer.echo(f"declared     {_versions(report.declared_versions)}")
        typer.echo(f"status       {report.status}")
        if report.description and number == report.declared:
            typer.echo(f"description  {report.description}")
    else:
        typer.echo("declared     -  (no loaded workflow publishes it)")
    typer.echo("fields")
    if found:
        table(
            ["  NAME", "TYPE", "REQUIRED"],
            [["  " + f.path, f.type, "yes" if f.required else "no"] for f in found],
        )
    else:
        typer.echo("  none")
    typer.echo("schema")
    print_json(schema)


@schemas.command("check")
def check(
    ctx: typer.Context,
    write: bool = typer.Option(
        False, "--write", help="Record the new versions (only when nothing is refused)."
    ),
    folder: Path | None = _folder_option(),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Check every published type against its recorded versions: a recorded version
    unchanged, a new version backward compatible with the last one. Exit 1 when anything
    is refused, each fault listed; `--write` then records nothing."""
    from orchestrator.entry.schema_registry import DEFAULT_DIR, declarations, read_recorded, record
    from orchestrator.runtime.compatibility import assess

    where = folder or DEFAULT_DIR
    recorded = read_recorded(where)
    reports = assess(declarations(app_of(ctx).registry), recorded)
    faults = [fault for report in reports for fault in report.faults]
    published = {report.type for report in reports}
    unpublished = sorted(recorded.keys() - published)
    pending = sum(len(report.to_record) for report in reports)
    written = record(where, reports) if write and not faults else []
    if as_json:
        print_json(
            {
                "ok": not faults,
                "dir": str(where),
                "faults": faults,
                "written": [str(path) for path in written],
                "types": [
                    {
                        **_row(report),
                        "faults": report.faults,
                        "notes": report.notes,
                        "to_record": sorted(report.to_record),
                    }
                    for report in reports
                ],
                "unpublished": unpublished,
            }
        )
    else:
        _report(reports, unpublished, where, faults, written, write=write, pending=pending)
    if faults:
        raise typer.Exit(1)


def _report(
    reports: list[TypeReport],
    unpublished: list[str],
    where: Path,
    faults: list[str],
    written: list[Path],
    *,
    write: bool,
    pending: int,
) -> None:
    if not reports:
        typer.echo("no published event types (declare `publishes` on a workflow)")
    for report in reports:
        line = f"{report.type} v{report.declared}: {report.status}"
        versions = _versions(sorted(report.to_record))
        if report.to_record and not report.faults and not faults:
            line += f", recorded {versions}" if written else f", {versions} to record"
        typer.echo(line)
    for report in reports:
        for note in report.notes:
            typer.echo(f"note: {note}")
    for name in unpublished:
        typer.echo(f"note: {where / name} is recorded, but no loaded workflow publishes {name}")
    for fault in faults:
        typer.echo(f"refused: {fault}")
    count = f"{len(reports)} published event type(s)"
    if not reports:
        return
    if faults:
        tail = "; nothing recorded" if write else ""
        typer.echo(f"{len(faults)} fault(s) in {count}{tail}")
    elif written:
        typer.echo(f"{count} checked; recorded {len(written)} schema version(s) in {where}")
    elif pending:
        typer.echo(
            f"{count} checked; {pending} schema version(s) not recorded yet "
            "(`orchestrator schemas check --write` records them)"
        )
    else:
        typer.echo(f"{count} checked: every one recorded, unchanged")


def _choose(
    event_type: str, wanted: int | None, report: TypeReport | None, kept: dict[int, Schema]
) -> tuple[int, str, Schema]:
    """(version, "declared" or "recorded", schema): the declared one unless asked for a
    version; a version asked for is the recorded one, else the declared one."""
    if wanted is None:
        if report is not None:
            schema = report.schema(report.declared)
            assert schema is not None
            return report.declared, "declared", schema
        return max(kept), "recorded", kept[max(kept)]
    if wanted in kept:
        return wanted, "recorded", kept[wanted]
    schema = report.schema(wanted) if report else None
    if schema is not None:
        return wanted, "declared", schema
    from orchestrator.core.errors import InputError

    declared = _versions(report.declared_versions) if report else "-"
    raise InputError(
        f"{event_type} v{wanted} is neither declared nor recorded "
        f"(declared: {declared}; recorded: {_versions(sorted(kept))})"
    )


def _row(report: TypeReport) -> dict[str, Any]:
    return {
        "type": report.type,
        "workflows": report.workflows,
        "declared": report.declared,
        "declared_versions": report.declared_versions,
        "declared_by": [
            {"workflow": d.workflow, "workflow_version": d.workflow_version, "version": d.version}
            for d in report.declarations
        ],
        "recorded": report.recorded,
        "status": str(report.status),
        "description": report.description,
    }


def _declared_by(report: TypeReport | None, version: int) -> str:
    if report is None:
        return "declared"
    who = [
        f"{d.workflow} (workflow v{d.workflow_version})"
        for d in report.declarations
        if d.version == version
    ]
    return f"declared by {', '.join(who)}"


def _versions(numbers: list[int]) -> str:
    return ", ".join(f"v{n}" for n in numbers) or "-"

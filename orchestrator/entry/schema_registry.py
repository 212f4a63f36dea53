"""The schema registry of published events: a folder of JSON files committed with the
project, so that CI can check a change (`orchestrator schemas check`).

    schemas/                      the folder (`--dir`, ORCHESTRATOR_SCHEMAS_DIR)
      order.shipped/
        v1.json                   the JSON Schema of version 1 of the payload
        v2.json

Each file is the JSON Schema pydantic gives the payload's schema, pretty, with sorted
keys and a trailing newline, so a diff reads well. A recorded version is history: it
is written once (`check --write`) and never rewritten. What the folder holds beside
(other files, folders that are no event type) is left alone.

The rules themselves are pure, in orchestrator.runtime.compatibility; here the declared
schemas are gathered from the loaded workflows and the folder is read and written.
Lifecycle events (`orchestrator.*`) are not in the registry: their payloads are the
engine's, not a workflow's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.core.errors import DefinitionError, InputError
from orchestrator.core.publishing import TYPE
from orchestrator.runtime.compatibility import Declaration, Schema, TypeReport, assess
from orchestrator.runtime.registry import Registry

DEFAULT_DIR = Path("schemas")
MAX_FILE_BYTES = 4 * 1024 * 1024  # one recorded schema, at most
_FILE = re.compile(r"v([1-9][0-9]{0,8})\.json")


def declarations(registry: Registry) -> list[Declaration]:
    """Every published type of every loaded workflow version, with its JSON Schema."""
    newest = {(d.name, d.version) for d in registry.latest()}
    found: list[Declaration] = []
    for definition in registry.definitions():
        if not definition.published:
            continue
        schemas = registry.schemas(definition)
        for kind, spec in sorted(definition.published.items()):
            try:
                schema = plain(schemas.published_json_schema(kind))
            except Exception as exc:  # pydantic: a type with no JSON Schema (a callable...)
                where = definition.source or definition.name
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise DefinitionError(
                    f"workflow {where}: published event {kind!r} has no JSON Schema: {first}"
                ) from None
            found.append(
                Declaration(
                    type=kind,
                    version=spec.version,
                    workflow=definition.name,
                    workflow_version=definition.version,
                    latest=(definition.name, definition.version) in newest,
                    schema=schema,
                    description=spec.description,
                )
            )
    return found


def plain(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A schema as it reads back from its file (tuples as lists, keys as strings)."""
    value = json.loads(json.dumps(schema))
    assert isinstance(value, dict)
    return value


def render(schema: Mapping[str, Any]) -> str:
    """A schema's file: pretty, sorted keys, a trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def path_of(folder: Path, event_type: str, version: int) -> Path:
    return folder / event_type / f"v{version}.json"


def read_recorded(folder: Path) -> dict[str, dict[int, Schema]]:
    """The recorded schemas: event type -> version -> schema. A folder that does not exist
    records nothing; a file that is no JSON object is an InputError naming it."""
    if not folder.exists():
        return {}
    if not folder.is_dir():
        raise InputError(f"schema registry {folder} is not a folder")
    recorded: dict[str, dict[int, Schema]] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise InputError(f"cannot read schema registry {folder}: {exc.strerror}") from None
    for entry in entries:
        if not TYPE.fullmatch(entry.name) or not entry.is_dir():
            continue
        versions: dict[int, Schema] = {}
        for file in sorted(entry.iterdir()):
            match = _FILE.fullmatch(file.name)
            if match and file.is_file():
                versions[int(match.group(1))] = read_schema(file)
        if versions:
            recorded[entry.name] = versions
    return recorded


def read_schema(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read recorded schema {file}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise InputError(f"recorded schema {file} is more than {MAX_FILE_BYTES:,} bytes")
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"recorded schema {file} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"recorded schema {file} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InputError(f"recorded schema {file} nests too deeply") from None
    if not isinstance(value, dict):
        raise InputError(f"recorded schema {file} is not a JSON object")
    return value


def write_schema(folder: Path, event_type: str, version: int, schema: Mapping[str, Any]) -> Path:
    """Record one version (never over a recorded one): written whole or not at all."""
    target = path_of(folder, event_type, version)
    if target.exists():
        raise InputError(f"{target} is recorded already; a recorded version is not rewritten")
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(render(schema), encoding="utf-8")
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise InputError(f"cannot write {target}: {exc.strerror}") from None
    return target


def survey(registry: Registry, folder: Path) -> list[TypeReport]:
    """Each published type of the loaded workflows, checked against the folder."""
    return assess(declarations(registry), read_recorded(folder))


def record(folder: Path, reports: Iterable[TypeReport]) -> list[Path]:
    """Write the versions the reports have to record (their caller checked: no faults)."""
    written: list[Path] = []
    for report in reports:
        for version, schema in sorted(report.to_record.items()):
            written.append(write_schema(folder, report.type, version, schema))
    return written

"""What every command shares: the app on the context, JSON arguments, output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from orchestrator.bootstrap import App
from orchestrator.errors import InputError
from orchestrator.inbox import parse_json_object


def app_of(ctx: typer.Context) -> App:
    app = ctx.find_root().obj
    assert isinstance(app, App)
    return app


def json_argument(value: str | None, what: str) -> dict[str, Any]:
    """Parse `JSON` or `@file.json` (and `@-` for standard input) into an object."""
    if value is None:
        return {}
    if value.startswith("@"):
        source = value[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read {what} from {source}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise InputError(f"{what} in {source} is not UTF-8 text") from None
        return parse_json_object(text, f"{what} in {source}")
    return parse_json_object(value, what)


def key_argument(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    name, sep, found = value.partition("=")
    if not sep or not name or not found:
        raise InputError(f"--key must look like NAME=VALUE, not {value!r}")
    return name, found


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    from datetime import datetime

    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")

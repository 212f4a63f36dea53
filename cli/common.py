"""What every command shares: the app on the context, JSON arguments, output."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from orchestrator.core.errors import InputError
from orchestrator.core.limits import MAX_DATA_BYTES, MAX_TEXT_BYTES, read_limited
from orchestrator.entry.bootstrap import App
from orchestrator.store.inbox import parse_json_object

MAX_LIST = 10_000  # rows a listing command prints at most


def app_of(ctx: typer.Context) -> App:
    app = ctx.find_root().obj
    assert isinstance(app, App)
    return app


def json_argument(value: str | None, what: str) -> dict[str, Any]:
    """Parse `JSON` or `@file.json` (and `@-` for standard input) into an object.

    A file or standard input is read at most MAX_TEXT_BYTES (+1), never whole."""
    if value is None:
        return {}
    if value.startswith("@"):
        source = value[1:]
        try:
            if source == "-":
                raw = read_limited(sys.stdin.buffer, f"{what} on standard input")
            else:
                with open(source, "rb") as file:
                    raw = read_limited(file, f"{what} in {source}")
            text = raw.decode("utf-8")
        except OSError as exc:
            raise InputError(f"cannot read {what} from {source}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise InputError(f"{what} in {source} is not UTF-8 text") from None
        return _parse(text, f"{what} in {source}")
    return _parse(value, what)


def _parse(text: str, what: str) -> dict[str, Any]:
    if len(text) > MAX_TEXT_BYTES:
        raise InputError(
            f"{what} is {len(text):,} characters of text; the limit is {MAX_DATA_BYTES:,} "
            "bytes of JSON"
        )
    return parse_json_object(text, what)


def bounded_int(text: str, what: str, low: int, high: int) -> int:
    """A whole number from `low` to `high` given as text, or an InputError naming `what`
    (checked as text first: `--limit 1` followed by 5,000 digits is never converted)."""
    digits = text.strip()
    if digits.isascii() and digits.isdigit() and len(digits) <= len(str(high)):
        number = int(digits)
        if low <= number <= high:
            return number
    shown = text if len(text) <= 24 else f"{text[:20]}... ({len(text):,} characters)"
    raise InputError(f"{what} must be a whole number from {low:,} to {high:,}, not {shown!r}")


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

"""What every command shares: the app on the context, JSON arguments, output.

Light to import, as every command module is (see cli/__init__.py): the engine and
rich are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from orchestrator.entry.bootstrap import App

MAX_LIST = 10_000  # rows a listing command prints at most


@dataclass
class GlobalOptions:
    """The root options, kept on the context by cli.main; the App is built from them on
    first use, so `COMMAND --help` and a command that needs no engine never import it."""

    redis_url: str | None
    workflows: str | None

    @cached_property
    def app(self) -> App:
        import_redis_without_its_metrics_sdk()
        from orchestrator.entry.bootstrap import App
        from orchestrator.entry.settings import Settings

        return App(Settings.from_env(redis_url=self.redis_url, workflows=self.workflows))


# What redis-py 8 imports at its own import only to learn that it is installed
# (redis/observability/providers.py: a flag and a type hint that nothing reads).
_REDIS_METRICS_SDK = "opentelemetry.sdk.metrics"


def import_redis_without_its_metrics_sdk() -> None:
    """Import redis-py with the OpenTelemetry metrics SDK held back for that moment.

    The SDK is installed (the engine traces with OpenTelemetry), so `import redis` loads
    it, psutil included: a third of `orchestrator status ID` under cProfile; without it
    the command takes 0.20 s rather than 0.23 (median of 9 runs, alternating). A command
    never turns on redis-py's own metrics, so the SDK is made
    unimportable while redis-py imports, and importable again at once after: a command
    that traces, or the server's metrics, imports it as usual when it needs it.
    """
    if "redis" in sys.modules or _REDIS_METRICS_SDK in sys.modules:
        return
    sys.modules[_REDIS_METRICS_SDK] = None  # type: ignore[assignment]  # import fails
    try:
        import redis  # noqa: F401
    finally:
        del sys.modules[_REDIS_METRICS_SDK]


def app_of(ctx: typer.Context) -> App:
    options = ctx.find_root().obj
    assert isinstance(options, GlobalOptions)
    return options.app


def json_argument(value: str | None, what: str) -> dict[str, Any]:
    """Parse `JSON` or `@file.json` (and `@-` for standard input) into an object.

    A file or standard input is read at most MAX_TEXT_BYTES (+1), never whole."""
    from orchestrator.core.errors import InputError
    from orchestrator.core.limits import read_limited

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
    from orchestrator.core.errors import InputError
    from orchestrator.core.limits import MAX_DATA_BYTES, MAX_TEXT_BYTES
    from orchestrator.store.inbox import parse_json_object

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
    from orchestrator.core.errors import InputError

    shown = text if len(text) <= 24 else f"{text[:20]}... ({len(text):,} characters)"
    raise InputError(f"{what} must be a whole number from {low:,} to {high:,}, not {shown!r}")


def key_argument(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    name, sep, found = value.partition("=")
    if not sep or not name or not found:
        from orchestrator.core.errors import InputError

        raise InputError(f"--key must look like NAME=VALUE, not {value!r}")
    return name, found


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def when(timestamp: float | None, zone: str | None = None) -> str:
    """A time for people: ISO 8601 with its zone, in UTC unless `zone` (IANA) is given."""
    if not timestamp:
        return "-"
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    tz: Any = UTC
    if zone and zone != "UTC":
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            tz = UTC
    moment = datetime.fromtimestamp(timestamp, tz)
    text = moment.isoformat(timespec="seconds")
    return text.removesuffix("+00:00") + "Z" if tz is UTC else text


_EPOCH = re.compile(r"\b(due|at|until) (\d{9,11}(?:\.\d+)?)\b")


def epochs_as_times(text: str) -> str:
    """`timer X due 1765000000.000` -> `timer X due 2025-12-06T05:46:40Z` (for text output)."""
    return _EPOCH.sub(lambda m: f"{m.group(1)} {when(float(m.group(2)))}", text)


def table(columns: list[str], rows: list[list[str]]) -> None:
    """Rows under a header, in aligned columns, on standard output.

    Cells are plain text (never Rich markup, whatever a name holds); nothing is cut or
    wrapped when the output is not a terminal, so scripts and pipes see whole values."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(
        file=sys.stdout,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=True,
        width=None if sys.stdout.isatty() else 100_000,
    )
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in columns:
        grid.add_column(name, no_wrap=not sys.stdout.isatty(), overflow="fold")
    for row in rows:
        grid.add_row(*(Text(cell) for cell in row))
    with console.capture() as captured:
        console.print(grid)
    out = "\n".join(line.rstrip() for line in captured.get().splitlines())
    typer.echo(out)


def info(message: str) -> None:
    """A message for the person at the terminal, on standard error (stdout is for results)."""
    typer.echo(message, err=True)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on standard error for a long operation, fed `(done, total)`.

    Drawn only at a terminal (stdout stays for results; pipes and `--json` see nothing),
    and only for work that comes in several parts or has taken a second: a bar that would
    flash for a quick call stays hidden. Rich decides what a terminal is
    (TTY_COMPATIBLE=1 forces one)."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    bar = Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=False,
    )
    started = time.monotonic()
    task = bar.add_task(description, total=None)
    shown = False

    def update(done: int, total: int) -> None:
        nonlocal shown
        if not shown and (time.monotonic() - started >= SHOW_PROGRESS_AFTER or done < total):
            bar.start()
            shown = True
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if shown:
            bar.stop()


SHOW_PROGRESS_AFTER = 1.0  # seconds: work still unfinished by then gets a bar

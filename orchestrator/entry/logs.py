"""The logging of long-running commands: a level and a format (text, or one JSON object a
line), set once at start-up by `--log-level/--log-format` (`orchestrator worker`, `serve`,
`demo`, `events tail --follow`), on the standard logging module.

The worker's processes are forked from the supervisor after this ran: they inherit it. A
record about a task's try (the task wrapper's failure, or a line the task logs itself while
it runs) carries the try's instance id, workflow, state, task and attempt; one of the
applier's about an instance carries its instance id, workflow and state. The JSON format
prints them, the text format has them in the message. A failed task's traceback (the
record's `traceback`, bounded by the task wrapper) or a logged exception's is the JSON
line's `exception`. With tracing on (orchestrator.runtime.tracing), a line logged inside
a span carries its `trace_id` and `span_id`, to find the trace of a line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from orchestrator.runtime import tracing
from orchestrator.runtime.taskinfo import task_info

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
DEFAULT_LEVEL = "INFO"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TRY_FIELDS = ("instance_id", "workflow", "state", "task", "attempt")
# Libraries that log every request at INFO: held at WARNING unless the level is DEBUG.
# Twilio's SDK writes some ten lines a message (its request's method, URL and headers,
# the response's status and headers): at the worker's default INFO, screens of a busy
# notification worker's stderr, and some 100 us of CPU an SMS (measured writing to
# /dev/null; 4 us held back), 5% of what a notification worker spends on one.
CHATTY = ("twilio.http_client",)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message, the try's
    fields when the record is about one, and the exception's traceback when it has one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_try_fields(record))
        if tracing.enabled:
            line.update(_trace_fields())
        given = getattr(record, "traceback", None)
        if isinstance(given, str):  # the message ends with it, for the text format
            line["message"] = line["message"].removesuffix("\n" + given.rstrip("\n"))
            line["exception"] = given
        elif record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _trace_fields() -> dict[str, str]:
    """The current span's trace and span ids, as hex (as trace viewers show them)."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def _try_fields(record: logging.LogRecord) -> dict[str, Any]:
    given = {name: getattr(record, name) for name in TRY_FIELDS if hasattr(record, name)}
    if given:
        return given
    try:
        info = task_info()  # a line the task logs while it runs
    except RuntimeError:  # not inside a try
        return {}
    return {
        "instance_id": info.instance_id,
        "workflow": info.workflow,
        "state": info.state,
        "attempt": info.attempt,
    }


def configure(level: str = DEFAULT_LEVEL, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Log records at `level` and above to stderr in `fmt`; replaces the root's handlers."""
    if level.upper() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in CHATTY:
        logging.getLogger(name).setLevel(
            logging.NOTSET if level.upper() == "DEBUG" else logging.WARNING
        )

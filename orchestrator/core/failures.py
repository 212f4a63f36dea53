"""What a failed try says about itself, and what the engine makes of it. Pure.

The task wrapper (orchestrator.runtime.tasks) reports a failure with `error_type` (the
class name), `error_types` (the class and its bases, most specific first) and,
for an `orchestrator.NonRetryable`, `retryable: false`. The transition function
reads them here: to decide whether a try is retried (and after what backoff),
and which `On(..., error=...)` row a failure takes. The watchdog's report of a lost try carries
only `error_type: TaskLost`, and so stays retryable.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

from orchestrator.core.errors import NonRetryable

if TYPE_CHECKING:
    from orchestrator.core.spec import TaskSpec

MAX_TYPES = 32  # names reported at most, most specific first
_UNNAMED = (BaseException, Exception, object)


def failure_data(exc: BaseException) -> dict[str, Any]:
    """The data a failure event carries about its error (besides the message)."""
    data: dict[str, Any] = {"error_type": type(exc).__name__, "error_types": reported_types(exc)}
    if isinstance(exc, NonRetryable):
        data["retryable"] = False
    return data


def reported_types(exc: BaseException) -> list[str]:
    """The names of the error's class and its bases, most specific first, without
    BaseException, Exception and object (every error is one; naming them says nothing)."""
    names: list[str] = []
    for cls in type(exc).__mro__:
        if cls not in _UNNAMED and cls.__name__ not in names:
            names.append(cls.__name__)
    return names[:MAX_TYPES]


def error_types(data: dict[str, Any]) -> tuple[str, ...]:
    """The type names a failure event reports, most specific first: its `error_types`,
    else its `error_type`. Data from outside may be malformed: anything but a list of
    names counts as absent."""
    reported = data.get("error_types")
    if isinstance(reported, list):
        names = tuple(name for name in reported if isinstance(name, str))
        if names:
            return names
    single = data.get("error_type")
    return (single,) if isinstance(single, str) else ()


def retryable(task: TaskSpec, data: dict[str, Any]) -> bool:
    """Whether a failed try may be tried again: not when the error says so (a
    NonRetryable reports `retryable: false`), nor when one of its types is in the
    task's `non_retryable` (which cannot name TaskLost: a lost try is retried)."""
    if data.get("retryable") is False:
        return False
    return task.non_retryable.isdisjoint(error_types(data))


def backoff_delay(task: TaskSpec, attempt: int, instance_id: str) -> float:
    """Exponential backoff with up to 25% jitter, deterministic per instance and try."""
    base = min(task.max_backoff, task.backoff * 2 ** (attempt - 1))
    jitter = zlib.crc32(f"{instance_id}:{attempt}".encode()) / 0xFFFFFFFF * 0.25
    return float(base * (1 + jitter))


FAILURE_EVENTS = ("task.failed", "compensation.failed")
MAX_FAILURE_TEXT = 300  # characters of "Type: message" a note or a status line shows, at most


def failure_text(data: dict[str, Any]) -> str:
    """ "ErrorType: message" of a failure event's data, cut to MAX_FAILURE_TEXT characters:
    what a history note and `status` show (the whole message and the traceback are in
    the event's data)."""
    text = f"{data.get('error_type') or 'error'}: {data.get('message') or ''}".rstrip(": ")
    text = " ".join(text.split())  # one line
    return text if len(text) <= MAX_FAILURE_TEXT else text[: MAX_FAILURE_TEXT - 3] + "..."


def last_failure(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last failed try in an instance's history entries (oldest first), or None."""
    for entry in reversed(history):
        event = entry.get("event") or {}
        if event.get("type") in FAILURE_EVENTS and isinstance(event.get("data"), dict):
            return dict(entry)
    return None

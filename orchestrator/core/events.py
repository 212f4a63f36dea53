"""Events: facts that happened, in the order they were appended to an inbox.

An event is addressed to one instance, carries JSON data, and the time at
which it was stamped at the door. Time enters the engine only here, which is
what lets the transition function stay pure and a history be replayed.

An event is read back from Redis, where anyone with write access may have put
anything: `from_json` checks every field's type and raises `Unreadable` (a
ValueError) saying which is wrong, so the applier can set the entry aside
instead of failing on it further down.

`trace` is the W3C traceparent of the span that caused the event, when tracing is on
(orchestrator.runtime.tracing): plain text here, written only when set, so an event
stored with tracing off has the very bytes it had before; one that is not a string is
read as none (a trace is a hint, never a reason to refuse an event).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.errors import OrchestratorError

# Event types the engine itself produces or understands.
STARTED = "workflow.started"
CANCEL = "workflow.cancel"
RESUME = "workflow.retry"
UNDO = "workflow.undo"  # a parent compensating past a completed child: undo its steps
TASK_COMPLETED = "task.completed"
TASK_FAILED = "task.failed"
COMPENSATION_COMPLETED = "compensation.completed"
COMPENSATION_FAILED = "compensation.failed"
RETRY_DUE = "task.retry"
NOTIFICATION_SENT = "notification.sent"
NOTIFICATION_FAILED = "notification.failed"
DEFAULT_TIMEOUT_EVENT = "state.timeout"
DEADLINE_EVENT = "workflow.deadline"  # a workflow's `deadline` passed (unless it names another)

# Groupings of event types, each defined here once.
ENGINE_TYPES = frozenset(
    {STARTED, CANCEL, RESUME, UNDO, COMPENSATION_COMPLETED, COMPENSATION_FAILED, RETRY_DUE}
)
"""The engine's own: produced inside it, never emitted from outside, never parked."""
ANSWERS = frozenset({TASK_COMPLETED, TASK_FAILED, COMPENSATION_COMPLETED, COMPENSATION_FAILED})
"""A task or compensation job's answers: once one is applied, the watchdog stops watching
the job (orchestrator.runtime.watchdog)."""
FAILURES = frozenset({TASK_FAILED, COMPENSATION_FAILED})
"""The only events a transition row may route by error type (`On(..., error=...)`)."""
WORKER_REPORTS = frozenset({TASK_COMPLETED, TASK_FAILED, NOTIFICATION_SENT, NOTIFICATION_FAILED})
"""What task and notification workers report: every workflow accepts them, with or
without a transition on them."""


class Unreadable(OrchestratorError, ValueError):
    """Data read back from Redis that does not have the shape it must; says what is wrong."""


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    instance_id: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)
    trace: str | None = None  # the traceparent of the span that caused it (tracing on)

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "instance": self.instance_id,
            "at": self.at,
            "data": self.data,
        }
        if self.trace is not None:
            doc["trace"] = self.trace
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        """Parse an event; raises Unreadable naming what is wrong. Bytes must be UTF-8."""
        try:
            doc = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        except UnicodeDecodeError as exc:
            raise Unreadable(f"not UTF-8 ({exc})") from None
        except json.JSONDecodeError as exc:
            raise Unreadable(f"not JSON: {exc}") from None
        except (RecursionError, ValueError) as exc:  # ValueError: an integer too long
            raise Unreadable(f"not JSON: nested too deeply or too long ({exc})") from None
        return cls.from_doc(doc)

    @classmethod
    def from_doc(cls, doc: Any) -> Event:
        """An event from its parsed JSON; raises Unreadable naming a missing or mistyped field."""
        if not isinstance(doc, dict):
            raise Unreadable(f"an event must be a JSON object, not {_kind(doc)}")
        for name in ("id", "type", "instance"):
            if not isinstance(doc.get(name), str):
                raise Unreadable(f"'{name}' must be a string, not {_kind(doc.get(name))}")
        at = doc.get("at")
        try:
            when = (
                math.nan
                if isinstance(at, bool)
                else float(at)
                if isinstance(at, int | float)
                else math.nan
            )
        except OverflowError:
            when = math.nan
        if not math.isfinite(when):
            raise Unreadable(f"'at' must be a finite number, not {_kind(at)}")
        data = doc.get("data")
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            raise Unreadable(f"'data' must be an object, not {_kind(data)}")
        trace = doc.get("trace")
        return cls(
            id=doc["id"],
            type=doc["type"],
            instance_id=doc["instance"],
            at=when,
            data=data,
            trace=trace if isinstance(trace, str) else None,
        )

    @property
    def entered_seq(self) -> int | None:
        """The state entry this event answers, for events bound to one (tasks, timers)."""
        value = self.data.get("entered_seq")
        return int(value) if value is not None else None


def _kind(value: Any) -> str:
    """A JSON value's kind, as a message names it."""
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )

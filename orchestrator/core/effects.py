"""Effects: orders the transition function gives, which the applier carries out.

Each is committed in the same MULTI/EXEC as the state change that caused it,
as an RQ job (tasks, notifications) or a timer entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TaskKind = Literal["task", "compensation"]


@dataclass(frozen=True)
class RunTask:
    task: str  # dotted path "module:function"
    kind: TaskKind
    state: str
    attempt: int
    entered_seq: int
    timeout: float
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendNotification:
    """Send one notification: a channel, a recipient (None: none found in the context),
    a template of the workflow and the context it is rendered with."""

    channel: str
    to: str | None
    template: str
    context: dict[str, Any] = field(default_factory=dict)
    templates: str | None = None  # the workflow's module, beside which templates/ is
    urgent: bool = False


@dataclass(frozen=True)
class StartTimer:
    id: str
    due: float
    event_type: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CancelTimers:
    ids: tuple[str, ...]


@dataclass(frozen=True)
class StartChild:
    """Create a child instance and append its start event (nothing if the id exists: a
    step applied again starts no second child). `parent` is what the child's end answers."""

    workflow: str
    child_id: str
    input: dict[str, Any]
    parent: dict[str, Any]


@dataclass(frozen=True)
class SignalChild:
    """Append an engine event to a child's inbox: cancel it, or undo its finished steps."""

    child_id: str
    event_type: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnswerParent:
    """Append the answer of a child's end (or of its undoing) to its parent's inbox."""

    parent_id: str
    event_type: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PublishEvent:
    """Write an event to the published stream (a transactional outbox: in the commit of
    the step that caused it). `at`: when the event that caused it happened (its time, the
    same if the step is applied again); `version`: its schema's (0: the engine's own)."""

    type: str
    data: dict[str, Any]
    at: float
    version: int = 0
    encoded: str = ""  # the payload as its schema shaped it, JSON (the applier's runtime)


Effect = (
    RunTask
    | SendNotification
    | StartTimer
    | CancelTimers
    | StartChild
    | SignalChild
    | AnswerParent
    | PublishEvent
)


def describe(effect: Effect) -> str:
    """A one-line summary for history, without the context it carries."""
    match effect:
        case RunTask(task=task, kind=kind, attempt=attempt):
            return f"run {kind} {task} (attempt {attempt})"
        case SendNotification(channel=channel, to=to, template=template):
            return f"notify {channel} to {to} with {template}"
        case StartTimer(due=due, event_type=event_type):
            return f"timer {event_type} due {due:.3f}"
        case CancelTimers(ids=ids):
            return f"cancel {len(ids)} timer(s)"
        case StartChild(workflow=workflow, child_id=child_id):
            return f"start child {workflow} {child_id}"
        case SignalChild(child_id=child_id, event_type=event_type):
            return f"{event_type} to child {child_id}"
        case AnswerParent(parent_id=parent_id, event_type=event_type):
            return f"{event_type} to parent {parent_id}"
        case PublishEvent(type=kind):
            return f"publish {kind}"

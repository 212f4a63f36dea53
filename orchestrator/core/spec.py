"""The compiled form of a workflow: frozen, checked data, the only thing the pure
transition function reads.

A workflow class is written in the words of orchestrator.core.language and
compiled by orchestrator.core.workflow; what comes out is a `Definition` of
specs. Keeping this form apart from the language is what lets the transition
function, replay and the graph read a workflow without the class that
declared it, and lets everything here be plain values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.core.events import DEADLINE_EVENT

if TYPE_CHECKING:
    from orchestrator.core.schedule import ScheduleSpec

Guard = Callable[[dict[str, Any], dict[str, Any]], bool]
Save = bool | str | Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
Outcome = Literal["completed", "failed", "cancelled"]
MissingInstance = Literal["refuse", "start", "wait"]
MISSING_INSTANCE: tuple[MissingInstance, ...] = ("refuse", "start", "wait")
CANCELLED = "cancelled"  # the built-in cancel target, unless a workflow names its own
TASK_LOST = "TaskLost"  # the error type of a try whose worker died (orchestrator.runtime.watchdog)
LOST_TRIES = 3  # tries of one step lost with their worker retried on top of its retries


@dataclass(frozen=True)
class TaskSpec:
    path: str
    attempts: int
    timeout: float
    backoff: float
    max_backoff: float
    non_retryable: frozenset[str] = frozenset()  # error type names never retried


@dataclass(frozen=True)
class NotifySpec:
    channel: str
    template: str
    to: str | Callable[[dict[str, Any]], str | None]
    urgent: bool = False


@dataclass(frozen=True)
class StateSpec:
    name: str
    initial: bool
    final: bool
    outcome: Outcome
    task: TaskSpec | None
    compensation: TaskSpec | None
    notify: tuple[NotifySpec, ...]
    timeout: float | None
    timeout_event: str
    timeout_at: str | None = None  # context key of the moment the timeout falls due
    ignore: frozenset[str] = frozenset()  # event types consumed without effect here


@dataclass(frozen=True)
class TransitionSpec:
    event: str
    sources: frozenset[str] | None  # None: from any non-final state
    target: str
    guard: Guard | None
    compensate: bool
    internal: bool = False
    save: Save | None = None
    errors: frozenset[str] | None = None  # None: any error (or not a failure row)


@dataclass(frozen=True)
class Definition:
    name: str
    version: int
    states: dict[str, StateSpec]
    initial: str
    transitions: tuple[TransitionSpec, ...]
    starts_on: frozenset[str]
    start_if: Callable[[dict[str, Any]], bool] | None
    correlate_by: str | None
    cancel_state: str
    description: str = ""
    event_types: frozenset[str] = field(default=frozenset())
    templates: str | None = None  # module whose folder holds templates/ (notifiers.templates)
    # event type -> the schema its data must fit, as declared (a pydantic model or a
    # TypedDict); plain data here, checked by orchestrator.runtime.schemas
    schemas: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""  # the class it was compiled from, as messages about it name it
    schedules: tuple[ScheduleSpec, ...] = ()  # when it starts on its own (core.schedule)
    deadline: float | None = None  # seconds an instance may run before `deadline_event`
    deadline_event: str = DEADLINE_EVENT
    # an event addressed by business key when no live instance has it (entry.client)
    missing_instance: MissingInstance = "refuse"
    missing_instance_wait: float = 300.0  # seconds a held event waits ("wait")

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
OnFailure = Literal["fail_fast", "wait_all"]
ON_FAILURE: tuple[OnFailure, ...] = ("fail_fast", "wait_all")
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


ParentClose = Literal["cancel", "abandon"]
PARENT_CLOSE: tuple[ParentClose, ...] = ("cancel", "abandon")
ChildInput = Callable[[dict[str, Any]], dict[str, Any]] | tuple[str, ...] | None


@dataclass(frozen=True)
class ChildSpec(TaskSpec):
    """A step run as a child workflow instead of a job: started with `input` (context keys,
    a function of the context, or None: the whole context the step would give a task), its
    end answering the step; `output`: the child's context key whose value is the result
    (None: its whole context). The same spec stands as the step's compensation: undoing
    the step undoes the completed child's own steps."""

    workflow: str = ""
    input: ChildInput = None
    output: str | None = None
    parent_close: ParentClose = "cancel"


@dataclass(frozen=True)
class BranchSpec:
    name: str
    task: TaskSpec
    compensation: TaskSpec | None


@dataclass(frozen=True)
class MapSpec:
    task: TaskSpec
    compensation: TaskSpec | None
    items: str  # context key of the list
    results: str  # context key the results go to, in item order
    max_concurrency: int
    tolerated: int | None  # failed items tolerated; None: see tolerated_percentage
    tolerated_percentage: float | None

    def tolerates(self, failures: int, total: int) -> bool:
        if self.tolerated is not None and failures <= self.tolerated:
            return True
        pct = self.tolerated_percentage
        return pct is not None and total > 0 and failures * 100 <= pct * total


STEP_SEPARATOR = "/"
"""A branch's step is "state/branch" (a parallel branch's name, a map item's index): what a
try, its answer and a compensation name, so that each branch keeps its own."""


def step_name(state: str, branch: str | None) -> str:
    return state if branch is None else f"{state}{STEP_SEPARATOR}{branch}"


def split_step(step: str) -> tuple[str, str | None]:
    state, sep, branch = step.partition(STEP_SEPARATOR)
    return (state, branch) if sep else (state, None)


@dataclass(frozen=True)
class NotifySpec:
    channel: str
    template: str
    to: str | Callable[[dict[str, Any]], str | None]
    urgent: bool = False


@dataclass(frozen=True)
class PublishSpec:
    """A published event type: how its payload is built, the schema it must fit (plain
    data here, read by orchestrator.runtime.schemas) and that schema's version."""

    type: str
    schema: Any
    data: tuple[str, ...] | Callable[[dict[str, Any]], dict[str, Any]] | None
    version: int
    description: str = ""


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
    parallel: tuple[BranchSpec, ...] = ()  # branches run at once instead of `task`
    map: MapSpec | None = None  # one try per item instead of `task`
    on_failure: OnFailure = "fail_fast"
    publish: tuple[str, ...] = ()  # published event types sent on entering it

    @property
    def fans_out(self) -> bool:
        return bool(self.parallel) or self.map is not None

    def branch_task(self, branch: str, kind: str) -> TaskSpec | None:
        """The task (or compensation) of one branch; None if this state has no such branch."""
        if self.map is not None:
            if not branch.isdigit():
                return None
            return self.map.task if kind == "task" else self.map.compensation
        for spec in self.parallel:
            if spec.name == branch:
                return spec.task if kind == "task" else spec.compensation
        return None

    def step_task(self, branch: str | None, kind: str) -> TaskSpec | None:
        """The task or compensation of this state (branch None) or of one of its branches."""
        if branch is None:
            return self.task if kind == "task" else self.compensation
        return self.branch_task(branch, kind)


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
    publish: tuple[str, ...] = ()  # published event types sent when it fires


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
    published: Mapping[str, PublishSpec] = field(default_factory=dict)  # type -> how

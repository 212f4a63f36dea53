"""The words a workflow is written in: `State`, `Task`, `Branch`, `Map`, `Notify`, `On`,
`Publish` and `ANY`.

    reserving = State(initial=True, task=reserve, compensation=release)
    shipped = State(final=True, notify=[Notify("email", "order_shipped", to="email")])
    transitions = [On("task.completed", source=reserving, target=shipped)]

These are what users write, and only that: plain records of what was said,
checked and frozen into specs (orchestrator.core.spec) when the class that
uses them is created (orchestrator.core.workflow). Kept apart so that the
public vocabulary reads on one page.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.core.events import DEFAULT_TIMEOUT_EVENT
from orchestrator.core.spec import Guard, OnFailure, Outcome, ParentClose, Save

TaskFunction = Callable[[dict[str, Any]], Any]
ErrorRef = type[BaseException] | str
"""An error type, as its class or its class name; a name matches the class and its subclasses."""
ErrorRefs = ErrorRef | Sequence[ErrorRef]


class _AnyState:
    def __repr__(self) -> str:
        return "ANY"


ANY = _AnyState()
"""Source of a transition that applies from every state that is not final."""


def task_path(fn: TaskFunction | str) -> str:
    """The importable "module:qualname" of a task, which is what an RQ job names."""
    if isinstance(fn, str):
        if not re.fullmatch(r"[\w.]+[:.][\w.]+", fn):
            raise ValueError(f"{fn!r} is not a dotted path such as 'package.module:function'")
        return fn
    if not callable(fn):
        raise ValueError(f"{fn!r} is neither a function nor a dotted path")
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or "<" in qualname or not qualname:
        raise ValueError(
            f"{qualname or fn!r} cannot be imported by a worker; define it at module level"
        )
    return f"{module}:{qualname}"


TASK_RETRIES = 0  # a task's tries after the first, unless given
COMPENSATION_RETRIES = 20  # a compensation's, unless given: a half-undone saga is the worst
COMPENSATION_MAX_BACKOFF = 300.0  # ...spaced up to 5 minutes apart: about an hour in all


@dataclass(frozen=True)
class Task:
    """A function a state runs on entry, with how often and how long it may try.

    `retries` counts the tries after the first (default: 0 for a task,
    COMPENSATION_RETRIES for a compensation). Between tries the engine waits
    `backoff * 2**(try-1)` seconds (capped at `max_backoff`, default 60 s, or
    300 s for a compensation, plus up to 25% jitter); only after the last try
    does `task.failed` reach the workflow. A try lost with its worker (killed,
    out of memory) is retried apart from these, up to LOST_TRIES times a step.
    An error of a type in `non_retryable` (classes or class names; a name also
    matches its subclasses), like any `orchestrator.NonRetryable`, ends the
    tries at once.
    """

    fn: TaskFunction | str
    retries: int | None = None
    timeout: float = 300.0
    backoff: float = 1.0
    max_backoff: float | None = None
    non_retryable: ErrorRefs = ()


@dataclass(frozen=True)
class Child:
    """A child workflow run as a step (a state's `child=`, a `Branch`, a `Map`'s task).

    The child starts with `input` (a list of context keys, a function of the context
    returning a dict, or None: the context a task would get) and its id derived from
    the parent's id and the step, so a step applied twice never starts two. Its end
    answers the step: completed, with `output` (a key of the child's context; None: its
    whole context) as the result; failed or cancelled, as the step's `task.failed`
    (`ChildFailed`, `ChildCancelled`), which rows route like any. When the parent
    compensates past a completed child, the child undoes its own finished steps,
    newest first. `parent_close`: what a running child gets when the parent is
    cancelled, compensates or ends: "cancel" (it compensates, as a cancel does) or
    "abandon" (it runs on by itself), as Temporal's ParentClosePolicy.
    """

    workflow: str
    input: Sequence[str] | Callable[[dict[str, Any]], dict[str, Any]] | None = None
    output: str | None = None
    parent_close: ParentClose = "cancel"


@dataclass(frozen=True)
class Branch:
    """One branch of a parallel state: a task, and the compensation that undoes it once it
    has completed (each branch keeps its own retries, timeout and non-retryable errors)."""

    task: Task | Child | TaskFunction | str
    compensation: Task | TaskFunction | str | None = None


@dataclass(frozen=True)
class Map:
    """One try of `task` per item of the list at context key `items`, at most
    `max_concurrency` at once, started in order. Each try gets the context without
    `items`, plus `item` and `index`. The results, in item order, go to context key
    `results` (default: the state's name); items that failed for good are listed at
    `<results>_failures` and are tolerated up to `tolerated_failures` items or
    `tolerated_failure_percentage` percent of them (as Step Functions'
    ToleratedFailureCount/Percentage; both unset: none is). `compensation` undoes each
    completed item, newest first, when the instance compensates."""

    task: Task | Child | TaskFunction | str
    items: str
    results: str | None = None
    compensation: Task | TaskFunction | str | None = None
    max_concurrency: int = 100
    tolerated_failures: int | None = None
    tolerated_failure_percentage: float | None = None


@dataclass(frozen=True)
class Notify:
    """A notification sent when a state is entered.

    `template` names a folder in the workflow's `templates/` (see
    notifiers.templates). `to` is the context key holding the recipient id
    or the address, or a function of the context returning it. An `urgent`
    notification is sent even in the recipient's quiet hours.
    """

    channel: str
    template: str
    to: str | Callable[[dict[str, Any]], str | None]
    urgent: bool = False


@dataclass(frozen=True)
class Publish:
    """A business event the workflow publishes (declared in the class's `publishes`),
    for other systems to subscribe to: published on entering the states that name
    its type (`State(publish=[...])`) or when a row that names it fires
    (`On(..., publish=[...])`), in the same commit as that step.

    `data` builds its payload from the context: a list of keys, a function of the
    context returning a dict, or None (the whole context, of which `schema` keeps only
    its own fields). `schema` (a pydantic model or a TypedDict) checks and shapes the
    payload before it is written; an event whose payload does not fit is not applied
    (dead letter, naming the field). `version` is the schema's version, carried by
    every published event (`dataschema`); `orchestrator schemas check` refuses a new
    version that is not backward compatible with the last one recorded.
    """

    type: str
    schema: Any
    data: Sequence[str] | Callable[[dict[str, Any]], dict[str, Any]] | None = None
    version: int = 1
    description: str = ""


class State:
    """One state of a workflow; its name is the attribute it is assigned to.

    `timeout` (seconds after entering) or `timeout_at` (a context key holding the
    moment: Unix seconds, or ISO 8601 text with its zone) appends `timeout_event` if
    the state is not left by then. `ignore` lists event types consumed without effect
    while in this state (recorded in history, never parked).

    Instead of one task a state may run several at once, `parallel={"name": Branch(...)}`,
    or one per item of a list, `map=Map(...)`: it is left when every branch has settled.
    Their results merge into the context in declaration (item) order, by the rule of a
    single task's result (see `merge_result`). When a branch fails for good,
    `on_failure="fail_fast"` (the default, as Step Functions' Parallel) fails the state at
    once, starting nothing more and leaving the branches in flight to settle on their own
    (what they complete is still undone when the instance compensates);
    `on_failure="wait_all"` waits for the others first. Either way the state's
    `task.failed` reaches the transition table, with the first failure's error type.
    `child=Child(...)` runs a child workflow as the state's step (see `Child`).
    `publish` names the published events (see `Publish`) sent on entering it.
    """

    def __init__(
        self,
        *,
        initial: bool = False,
        final: bool = False,
        outcome: Outcome = "completed",
        task: Task | TaskFunction | str | None = None,
        compensation: Task | TaskFunction | str | None = None,
        notify: Sequence[Notify] = (),
        timeout: float | None = None,
        timeout_event: str = DEFAULT_TIMEOUT_EVENT,
        timeout_at: str | None = None,
        ignore: Sequence[str] = (),
        parallel: Mapping[str, Branch | Task | Child | TaskFunction | str] | None = None,
        map: Map | None = None,
        on_failure: OnFailure = "fail_fast",
        child: Child | None = None,
        publish: Sequence[str] = (),
    ) -> None:
        self.name = ""
        self.initial = initial
        self.final = final
        self.outcome = outcome
        self.task = _as_task(task)
        self.compensation = _as_task(compensation)
        self.notify = tuple(notify)
        self.timeout = timeout
        self.timeout_event = timeout_event
        self.timeout_at = timeout_at
        self.ignore = ignore
        self.parallel = parallel
        self.map = map
        self.on_failure = on_failure
        self.child = child
        self.publish = publish

    def __set_name__(self, owner: type, name: str) -> None:
        if not self.name:  # a state also named by `cancel_state = state` keeps its own name
            self.name = name

    def __repr__(self) -> str:
        return f"State({self.name or '?'})"


def _as_task(value: Task | TaskFunction | str | None) -> Task | None:
    if value is None or isinstance(value, Task):
        return value
    return Task(value)


StateRef = State | str
SourceRef = StateRef | Sequence[StateRef] | _AnyState


@dataclass(frozen=True)
class On:
    """A row of the transition table: on `event`, from `source`, if `guard`, go to `target`.

    With `compensate=True` the instance first undoes every finished step that
    named a compensation, newest first, then enters `target`. `save` puts the
    event's data into the context as the row fires: True merges it key by key,
    a string stores it under that key, a function `(context, data) -> dict`
    returns what to merge. With
    `internal=True` (target the same as the source) the event is consumed
    where the instance stands: the state is not left and entered again, so
    its task, notifications and timeout do not start over. On `task.failed`
    and `compensation.failed` rows, `error` (an error type or a list of them,
    as classes or class names) makes the row match only a failure of one of
    those types or of a subclass; a row without it matches any failure, so
    the specific rows come first. `publish` names the published events (see
    `Publish`) sent when the row fires, before the target's own.
    """

    event: str
    source: SourceRef
    target: StateRef
    guard: Guard | None = None
    compensate: bool = False
    internal: bool = False
    save: Save | None = None
    error: ErrorRefs | None = None
    publish: Sequence[str] = ()

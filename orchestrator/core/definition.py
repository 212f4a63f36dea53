"""The definition language: a workflow is a class whose attributes are states
and whose `transitions` read like a table.

    class Order(Workflow):
        name = "order"
        reserving = State(initial=True, task=reserve, compensation=release)
        shipped = State(final=True)
        transitions = [On("task.completed", source=reserving, target=shipped)]

The class is checked when Python creates it, so a malformed workflow fails at
import with a message naming the class, the state and the fault, never while
an instance runs. What the checks leave behind is a frozen `Definition`, the
only thing the pure transition function reads.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from orchestrator.core.errors import DefinitionError
from orchestrator.core.events import DEFAULT_TIMEOUT_EVENT
from orchestrator.core.schemas import PayloadSchemas

TaskFunction = Callable[[dict[str, Any]], Any]
Guard = Callable[[dict[str, Any], dict[str, Any]], bool]
Save = bool | str | Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
Outcome = Literal["completed", "failed", "cancelled"]
CANCELLED = "cancelled"
ErrorRef = type[BaseException] | str
"""An error type, as its class or its class name; a name matches the class and its subclasses."""
ErrorRefs = ErrorRef | Sequence[ErrorRef]
FAILURE_EVENTS = frozenset({"task.failed", "compensation.failed"})
"""The only events a row may route by error type (`On(..., error=...)`)."""
TASK_LOST = "TaskLost"  # the error type of a try whose worker died (orchestrator.runtime.watchdog)


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
LOST_TRIES = 3  # tries of one step lost with their worker retried on top of its retries


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


class State:
    """One state of a workflow; its name is the attribute it is assigned to."""

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
    the specific rows come first.
    """

    event: str
    source: SourceRef
    target: StateRef
    guard: Guard | None = None
    compensate: bool = False
    internal: bool = False
    save: Save | None = None
    error: ErrorRefs | None = None


# ---- the compiled, frozen form the transition function reads ----------------


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
    schemas: PayloadSchemas = field(default_factory=lambda: PayloadSchemas({}))

    def state(self, name: str) -> StateSpec:
        return self.states[name]


class Workflow:
    """Base class of every workflow; subclass it and the subclass is checked and compiled.

    Class attributes a subclass may set:
      name          the name users start it by (default: the class name in snake_case)
      version       an integer; a running instance stays on the version it started with
      starts_on     event types that start a new instance (their data becomes its input)
      start_if      a function of such an event's data; when false, the event starts nothing
      correlate_by  a context key that routes external events to the instance
      cancel_state  the final state a cancelled instance ends in (default: built-in "cancelled")
      schemas       event type -> pydantic model or TypedDict its data must fit
      transitions   the table, a list of `On`
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    starts_on: ClassVar[Sequence[str]] = ()
    start_if: ClassVar[Callable[[dict[str, Any]], bool] | None] = None
    correlate_by: ClassVar[str | None] = None
    cancel_state: ClassVar[StateRef | None] = None
    transitions: ClassVar[Sequence[On]] = ()
    schemas: ClassVar[Mapping[str, Any]] = {}
    definition: ClassVar[Definition]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.definition = compile_workflow(cls)


def _schemas(
    schemas: Mapping[str, Any], event_types: frozenset[str], fail: Callable[[str], DefinitionError]
) -> PayloadSchemas:
    if not isinstance(schemas, Mapping):
        raise fail("schemas must map event types to pydantic models or TypedDicts")
    for event_type in schemas:
        if event_type not in event_types:
            raise fail(f"schemas names event type {event_type!r}, which no transition uses")
    try:
        return PayloadSchemas(schemas)
    except Exception as exc:  # pydantic refuses what it cannot validate
        raise fail(f"schemas: {str(exc).splitlines()[0]}") from None


def _templates_folder(cls: type) -> str | None:
    """The module of a workflow with `templates/` beside it: workers find the folder by it."""
    module = sys.modules.get(cls.__module__)
    source = getattr(module, "__file__", None)
    if source and (Path(source).parent / "templates").is_dir():
        return cls.__module__
    return None


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def compile_workflow(cls: type[Workflow]) -> Definition:
    """Check a workflow class and freeze it into a `Definition`."""
    where = cls.__name__

    def fail(message: str) -> DefinitionError:
        return DefinitionError(f"workflow {where}: {message}")

    name = cls.__dict__.get("name") or _snake(cls.__name__)
    version = cls.version
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise fail(f"version must be a positive integer, not {version!r}")

    declared = {
        attr: value
        for attr, value in vars(cls).items()
        if isinstance(value, State) and attr != "cancel_state"
    }
    if not declared:
        raise fail("declares no states")
    by_object = {id(state): attr for attr, state in declared.items()}

    def resolve(ref: object, role: str) -> str:
        if isinstance(ref, State):
            found = by_object.get(id(ref))
            if found is None:
                raise fail(f"{role} {ref!r} is not a state of this workflow")
            return found
        if isinstance(ref, str):
            if ref not in declared and not (ref == CANCELLED and role == "cancel_state"):
                known = ", ".join(sorted(declared))
                raise fail(f"{role} names unknown state {ref!r} (states: {known})")
            return ref
        raise fail(f"{role} must be a State or a state name, not {ref!r}")

    initials = [attr for attr, state in declared.items() if state.initial]
    if not initials:
        raise fail("has no initial state; mark one State(initial=True)")
    if len(initials) > 1:
        raise fail(f"has more than one initial state: {', '.join(initials)}")

    states = {attr: _compile_state(attr, state, fail) for attr, state in declared.items()}

    transitions: list[TransitionSpec] = []
    for index, row in enumerate(cls.transitions):
        if not isinstance(row, On):
            raise fail(f"transition {index} is {row!r}, not an On(...)")
        if not isinstance(row.event, str) or not row.event:
            raise fail(f"transition {index} has no event type")
        sources: frozenset[str] | None
        if row.source is ANY:
            sources = None
        elif isinstance(row.source, State | str):
            sources = frozenset({resolve(row.source, f"transition on {row.event!r}: source")})
        elif isinstance(row.source, Iterable):
            sources = frozenset(
                resolve(ref, f"transition on {row.event!r}: source") for ref in row.source
            )
        else:
            raise fail(f"transition on {row.event!r}: source {row.source!r} is not a state")
        target = resolve(row.target, f"transition on {row.event!r}: target")
        for source in sources or ():
            if states[source].final:
                raise fail(
                    f"state {source!r} is final but has an outgoing transition on {row.event!r}"
                )
        if row.guard is not None and not callable(row.guard):
            raise fail(
                f"transition on {row.event!r} from {_show(sources)}: guard {row.guard!r} "
                "is not callable"
            )
        if row.internal and (sources != frozenset({target}) or row.compensate):
            raise fail(
                f"internal transition on {row.event!r} must have one source, the same as its "
                f"target, and cannot compensate (source {_show(sources)}, target {target!r})"
            )
        save = row.save
        if save is False:
            save = None
        if save is not None and not (save is True or isinstance(save, str) or callable(save)):
            raise fail(
                f"transition on {row.event!r} from {_show(sources)}: save must be True, a "
                f"context key or a function (context, data) -> dict, not {save!r}"
            )
        if isinstance(save, str) and not save:
            raise fail(f"transition on {row.event!r} from {_show(sources)}: save key is empty")
        errors: frozenset[str] | None = None
        if row.error is not None:
            role = f"transition on {row.event!r} from {_show(sources)}: error"
            if row.event not in FAILURE_EVENTS:
                raise fail(
                    f"{role}: only task.failed and compensation.failed rows can route by "
                    f"error type, not {row.event!r} rows"
                )
            errors = error_names(row.error, role, fail)
        transitions.append(
            TransitionSpec(
                row.event,
                sources,
                target,
                row.guard,
                row.compensate,
                row.internal,
                save=save,
                errors=errors,
            )
        )

    cancel_state = CANCELLED
    if cls.cancel_state is not None:
        cancel_state = resolve(cls.cancel_state, "cancel_state")
    if cancel_state in states and not states[cancel_state].final:
        raise fail(f"cancel_state {cancel_state!r} must be a final state")

    initial = initials[0]
    _check_reachable({initial, cancel_state} & set(states), initial, states, transitions, fail)

    starts_on = frozenset(cls.starts_on)
    if isinstance(cls.starts_on, str):
        raise fail("starts_on must be a list of event types, not a string")
    start_if = cls.__dict__.get("start_if")
    if isinstance(start_if, staticmethod):
        start_if = start_if.__func__
    if start_if is not None and not callable(start_if):
        raise fail(f"start_if {start_if!r} is not callable")
    if cls.correlate_by is not None and not isinstance(cls.correlate_by, str):
        raise fail(f"correlate_by must be a context key, not {cls.correlate_by!r}")

    event_types = frozenset(t.event for t in transitions) | starts_on
    return Definition(
        name=name,
        version=version,
        states=states,
        initial=initial,
        transitions=tuple(transitions),
        starts_on=starts_on,
        start_if=start_if,
        correlate_by=cls.correlate_by,
        cancel_state=cancel_state,
        description=(cls.__doc__ or "").strip().split("\n")[0],
        event_types=event_types,
        templates=_templates_folder(cls),
        schemas=_schemas(cls.schemas, event_types, fail),
    )


def _compile_state(name: str, state: State, fail: Callable[[str], DefinitionError]) -> StateSpec:
    def spec(task: Task | None, role: str) -> TaskSpec | None:
        if task is None:
            return None
        try:
            path = task_path(task.fn)
        except ValueError as exc:
            raise fail(f"state {name!r}: {role}: {exc}") from None
        undo = role == "compensation"
        retries = task.retries
        if retries is None:
            retries = COMPENSATION_RETRIES if undo else TASK_RETRIES
        max_backoff = task.max_backoff
        if max_backoff is None:
            max_backoff = COMPENSATION_MAX_BACKOFF if undo else 60.0
        if retries < 0 or task.timeout <= 0 or task.backoff < 0:
            raise fail(f"state {name!r}: {role} needs retries >= 0, timeout > 0, backoff >= 0")
        where = f"state {name!r}: {role}: non_retryable"
        never = error_names(task.non_retryable, where, fail, empty_ok=True)
        if TASK_LOST in never:
            raise fail(f"{where}: a lost try ({TASK_LOST}: its worker died) is always retried")
        return TaskSpec(path, retries + 1, task.timeout, task.backoff, max_backoff, never)

    if state.final and state.initial:
        raise fail(f"state {name!r} cannot be both initial and final")
    if state.final and (state.task or state.compensation or state.timeout):
        raise fail(f"state {name!r} is final and so cannot run a task or set a timeout")
    if state.outcome not in ("completed", "failed", "cancelled"):
        raise fail(f"state {name!r}: outcome must be completed, failed or cancelled")
    if state.compensation is not None and state.task is None:
        raise fail(f"state {name!r} names a compensation but runs no task to compensate")
    if state.timeout is not None and not (
        isinstance(state.timeout, int | float) and state.timeout > 0
    ):
        raise fail(f"state {name!r}: timeout must be a positive number of seconds")
    for notify in state.notify:
        if not isinstance(notify, Notify):
            raise fail(f"state {name!r}: notify entries must be Notify(...), not {notify!r}")
    return StateSpec(
        name=name,
        initial=state.initial,
        final=state.final,
        outcome=state.outcome,
        task=spec(state.task, "task"),
        compensation=spec(state.compensation, "compensation"),
        notify=tuple(NotifySpec(n.channel, n.template, n.to, n.urgent) for n in state.notify),
        timeout=state.timeout,
        timeout_event=state.timeout_event,
    )


def error_names(
    refs: object,
    role: str,
    fail: Callable[[str], DefinitionError],
    *,
    empty_ok: bool = False,
) -> frozenset[str]:
    """The class names of error types given as classes or names, one or a list of them.

    A task's failure reports its class and base classes by name (orchestrator.runtime.jobs),
    so a name stands for the class and its subclasses. Exception and BaseException
    are refused: no failure reports them, so naming them would never match."""
    items: list[object] = [refs] if isinstance(refs, str | type) else []
    if not items:
        if not isinstance(refs, Iterable):
            raise fail(f"{role} must be an exception class, a class name or a list of them")
        items = list(refs)
    names: set[str] = set()
    for item in items:
        if isinstance(item, type) and issubclass(item, BaseException):
            name = item.__name__
        elif isinstance(item, str) and item.isidentifier():
            name = item
        else:
            raise fail(f"{role}: {item!r} is neither an exception class nor a class name")
        if name in ("BaseException", "Exception"):
            raise fail(
                f"{role}: {name} would match nothing (failures report their own types); "
                "name specific types, or raise orchestrator.NonRetryable"
            )
        names.add(name)
    if not names and not empty_ok:
        raise fail(f"{role} names no error type")
    return frozenset(names)


def _check_reachable(
    roots: set[str],
    initial: str,
    states: dict[str, StateSpec],
    transitions: list[TransitionSpec],
    fail: Callable[[str], DefinitionError],
) -> None:
    reached = set(roots)
    frontier = list(roots)
    while frontier:
        current = frontier.pop()
        for t in transitions:
            from_here = t.sources is None and not states[current].final
            if (from_here or (t.sources and current in t.sources)) and t.target not in reached:
                reached.add(t.target)
                frontier.append(t.target)
    unreachable = sorted(set(states) - reached)
    if unreachable:
        raise fail(f"state {unreachable[0]!r} is unreachable from the initial state {initial!r}")


def _show(sources: frozenset[str] | None) -> str:
    return "any state" if sources is None else ", ".join(sorted(sources))

"""The `Workflow` base class: a subclass is checked and compiled when Python creates it.

    class Order(Workflow):
        name = "order"
        reserving = State(initial=True, task=reserve, compensation=release)
        shipped = State(final=True)
        transitions = [On("task.completed", source=reserving, target=shipped)]

The class is checked when Python creates it, so a malformed workflow fails at
import with a message naming the class, the state and the fault, never while
an instance runs. What the checks leave behind is a frozen `Definition`
(orchestrator.core.spec), the only thing the pure transition function reads.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.core import events as ev
from orchestrator.core.durations import seconds
from orchestrator.core.errors import ConfigurationError, DefinitionError, InputError
from orchestrator.core.language import (
    ANY,
    COMPENSATION_MAX_BACKOFF,
    COMPENSATION_RETRIES,
    TASK_RETRIES,
    Branch,
    Child,
    Map,
    Notify,
    On,
    Publish,
    State,
    StateRef,
    Task,
    task_path,
)
from orchestrator.core.publishing import compile_publishes
from orchestrator.core.schedule import Schedule, ScheduleSpec, check
from orchestrator.core.spec import (
    CANCELLED,
    MISSING_INSTANCE,
    ON_FAILURE,
    PARENT_CLOSE,
    TASK_LOST,
    BranchSpec,
    ChildSpec,
    Definition,
    MapSpec,
    MissingInstance,
    NotifySpec,
    StateSpec,
    TaskSpec,
    TransitionSpec,
)


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
      schedules     when to start it on its own: a list of `Schedule` (cron or interval)
      deadline      how long an instance may run (seconds, or "90s", "15m", "2h", "7d")
                    before `deadline_event` (default "workflow.deadline") is applied
      missing_instance  what an event addressed by business key does when no live
                    instance has that key: "refuse" (the default), "start" one with
                    the key as its input, then apply the event (signal-with-start), or
                    "wait" up to `missing_instance_wait` (default "5m") for one to start
      publishes     the business events it publishes, a list of `Publish`; states and
                    rows name them (`publish=[...]`) to send them
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
    schedules: ClassVar[Sequence[Schedule]] = ()
    deadline: ClassVar[float | str | None] = None
    deadline_event: ClassVar[str] = ev.DEADLINE_EVENT
    missing_instance: ClassVar[str] = "refuse"
    missing_instance_wait: ClassVar[float | str] = "5m"
    publishes: ClassVar[Sequence[Publish]] = ()
    definition: ClassVar[Definition]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.definition = compile_workflow(cls)


def _schemas(
    schemas: Mapping[str, Any], event_types: frozenset[str], fail: Callable[[str], DefinitionError]
) -> dict[str, Any]:
    """The declared payload schemas, as data; whether each is one pydantic can read is
    checked when the workflow is loaded (orchestrator.runtime.schemas)."""
    if not isinstance(schemas, Mapping):
        raise fail("schemas must map event types to pydantic models or TypedDicts")
    for event_type in schemas:
        if event_type not in event_types:
            raise fail(f"schemas names event type {event_type!r}, which no transition uses")
    return dict(schemas)


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
            if row.event not in ev.FAILURES:
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
                publish=_published_names(
                    row.publish, f"transition on {row.event!r} from {_show(sources)}", fail
                ),
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

    deadline = _deadline(cls.deadline, cls.deadline_event, fail)
    missing, wait = _missing_instance(cls, fail)
    event_types = frozenset(t.event for t in transitions) | starts_on
    if deadline is not None:
        event_types |= {cls.deadline_event}
    event_types |= {event for state in states.values() for event in state.ignore}
    _check_ignored(states, transitions, fail)
    uses = [(f"state {n!r}", st.publish) for n, st in states.items()]
    uses += [(f"transition on {t.event!r} to {t.target!r}", t.publish) for t in transitions]
    published = compile_publishes(cls.publishes, uses, fail)
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
        source=cls.__name__,
        schedules=_schedules(cls.schedules, name, cls.correlate_by, fail),
        deadline=deadline,
        deadline_event=cls.deadline_event,
        missing_instance=missing,
        missing_instance_wait=wait,
        published=published,
    )


def _published_names(
    names: Sequence[str], where: str, fail: Callable[[str], DefinitionError]
) -> tuple[str, ...]:
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise fail(f"{where}: publish must be a list of published event types, not {names!r}")
    return tuple(names)


def _missing_instance(
    cls: type[Workflow], fail: Callable[[str], DefinitionError]
) -> tuple[MissingInstance, float]:
    policy = cls.missing_instance
    if policy not in MISSING_INSTANCE:
        raise fail(f"missing_instance must be one of {', '.join(MISSING_INSTANCE)}, not {policy!r}")
    if policy != "refuse" and cls.correlate_by is None:
        raise fail(f"missing_instance {policy!r} needs correlate_by (the key events name)")
    wait = cls.missing_instance_wait
    try:
        held = seconds(wait, "missing_instance_wait")
    except ConfigurationError as exc:
        raise fail(str(exc)) from None
    if held > 86400:
        raise fail(f"missing_instance_wait must be more than 0 and at most 1d, not {wait!r}")
    return policy, held  # checked against MISSING_INSTANCE


def _deadline(value: object, event: object, fail: Callable[[str], DefinitionError]) -> float | None:
    if not isinstance(event, str) or not event:
        raise fail(f"deadline_event must be an event type, not {event!r}")
    if event in ev.ENGINE_TYPES | ev.ANSWERS:
        raise fail(f"deadline_event {event!r} is one of the engine's own event types")
    if value is None:
        return None
    try:
        limit = seconds(value, "deadline")
    except ConfigurationError as exc:
        raise fail(str(exc)) from None
    if limit == float("inf"):
        raise fail(f"deadline must be a positive duration, not {value!r}")
    return limit


def _check_ignored(
    states: dict[str, StateSpec],
    transitions: list[TransitionSpec],
    fail: Callable[[str], DefinitionError],
) -> None:
    """An ignored event type must not also be one a row takes out of that state."""
    for state in states.values():
        for row in transitions:
            leaves = row.sources is None or state.name in row.sources
            if leaves and row.event in state.ignore and not state.final:
                raise fail(
                    f"state {state.name!r} ignores {row.event!r}, but a transition on it "
                    f"leaves that state (to {row.target!r}); drop one of the two"
                )


def _schedules(
    declared: object,
    workflow: str,
    correlate_by: str | None,
    fail: Callable[[str], DefinitionError],
) -> tuple[ScheduleSpec, ...]:
    if isinstance(declared, Schedule) or not isinstance(declared, Sequence):
        raise fail("schedules must be a list of Schedule(...)")
    specs: list[ScheduleSpec] = []
    for item in declared:
        if not isinstance(item, Schedule):
            raise fail(f"schedules entries must be Schedule(...), not {item!r}")
        if len(declared) > 1 and not item.name:
            raise fail("declares several schedules: give each a name")
        try:
            spec = check(item, workflow, declared=True)
        except InputError as exc:
            raise fail(str(exc)) from None
        if correlate_by is not None and correlate_by not in spec.input:
            raise fail(
                f"schedule {spec.name}: the workflow correlates by {correlate_by!r}, which "
                "the schedule's input lacks"
            )
        if any(other.name == spec.name for other in specs):
            raise fail(f"two schedules are named {spec.name!r}")
        specs.append(spec)
    return tuple(specs)


def _compile_state(name: str, state: State, fail: Callable[[str], DefinitionError]) -> StateSpec:
    def spec(task: Task | Child | None, role: str) -> TaskSpec | None:
        if task is None:
            return None
        if isinstance(task, Child):
            return _child_spec(task, f"state {name!r}: {role}", fail)
        if not isinstance(task, Task):
            task = Task(task)
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

    parallel, mapped = _compile_fan(name, state, spec, fail)
    task, compensation = spec(state.task, "task"), spec(state.compensation, "compensation")
    if state.child is not None:
        if not isinstance(state.child, Child):
            raise fail(f"state {name!r}: child must be Child(...), not {state.child!r}")
        if state.task or state.compensation or state.parallel is not None or state.map:
            raise fail(
                f"state {name!r}: a child state runs its child workflow instead of a task; "
                "the child's own compensations undo it"
            )
        task = compensation = spec(state.child, "child")
    if state.final and state.initial:
        raise fail(f"state {name!r} cannot be both initial and final")
    if state.final and (task or compensation or state.timeout):
        raise fail(f"state {name!r} is final and so cannot run a task or set a timeout")
    if state.outcome not in ("completed", "failed", "cancelled"):
        raise fail(f"state {name!r}: outcome must be completed, failed or cancelled")
    if compensation is not None and task is None:
        raise fail(f"state {name!r} names a compensation but runs no task to compensate")
    if state.timeout is not None and not (
        isinstance(state.timeout, int | float) and state.timeout > 0
    ):
        raise fail(f"state {name!r}: timeout must be a positive number of seconds")
    if state.timeout_at is not None:
        if not isinstance(state.timeout_at, str) or not state.timeout_at:
            key = state.timeout_at
            raise fail(f"state {name!r}: timeout_at must be a context key, not {key!r}")
        if state.timeout is not None:
            raise fail(f"state {name!r}: give timeout or timeout_at, not both")
        if state.final:
            raise fail(f"state {name!r} is final and so cannot set a timeout")
    ignore = state.ignore
    if isinstance(ignore, str) or not all(isinstance(e, str) and e for e in ignore):
        raise fail(f"state {name!r}: ignore must be a list of event types, not {ignore!r}")
    engine = sorted(set(ignore) & (ev.ENGINE_TYPES | ev.ANSWERS))
    if engine:
        raise fail(f"state {name!r}: cannot ignore the engine's own event {engine[0]!r}")
    for notify in state.notify:
        if not isinstance(notify, Notify):
            raise fail(f"state {name!r}: notify entries must be Notify(...), not {notify!r}")
    return StateSpec(
        name=name,
        initial=state.initial,
        final=state.final,
        outcome=state.outcome,
        task=task,
        compensation=compensation,
        notify=tuple(NotifySpec(n.channel, n.template, n.to, n.urgent) for n in state.notify),
        timeout=state.timeout,
        timeout_event=state.timeout_event,
        timeout_at=state.timeout_at,
        ignore=frozenset(ignore),
        parallel=parallel,
        map=mapped,
        on_failure=state.on_failure,
        publish=_published_names(state.publish, f"state {name!r}", fail),
    )


def _child_spec(child: Child, where: str, fail: Callable[[str], DefinitionError]) -> ChildSpec:
    """A child workflow step, checked (that the workflow is loaded is checked when the
    registry has them all: orchestrator.runtime.registry)."""
    if not (isinstance(child.workflow, str) and re.fullmatch(r"[\w.-]+", child.workflow)):
        raise fail(f"{where}: Child needs a workflow name, not {child.workflow!r}")
    given = child.input
    if given is None or callable(given):
        shape: Any = given
    elif isinstance(given, Sequence) and not isinstance(given, str):
        if not all(isinstance(k, str) and k for k in given):
            raise fail(f"{where}: Child input must list context keys, not {given!r}")
        shape = tuple(given)
    else:
        raise fail(f"{where}: Child input must be a list of context keys or a function")
    if child.output is not None and not (isinstance(child.output, str) and child.output):
        raise fail(f"{where}: Child output must be a context key of the child")
    if child.parent_close not in PARENT_CLOSE:
        raise fail(f"{where}: Child parent_close must be one of {PARENT_CLOSE}")
    return ChildSpec(
        path=f"child:{child.workflow}",
        attempts=1,
        timeout=0.0,
        backoff=0.0,
        max_backoff=0.0,
        workflow=child.workflow,
        input=shape,
        output=child.output,
        parent_close=child.parent_close,
    )


def _compile_fan(
    name: str,
    state: State,
    spec: Callable[[Any, str], TaskSpec | None],
    fail: Callable[[str], DefinitionError],
) -> tuple[tuple[BranchSpec, ...], MapSpec | None]:
    """A parallel state's branches, or a map state's item task, checked."""
    if state.on_failure not in ON_FAILURE:
        raise fail(f"state {name!r}: on_failure must be one of {ON_FAILURE}")
    if state.parallel is None and state.map is None:
        return (), None
    what = "parallel" if state.parallel is not None else "map"
    if state.parallel is not None and state.map is not None:
        raise fail(f"state {name!r}: give parallel or map, not both")
    if state.task is not None or state.compensation is not None:
        raise fail(
            f"state {name!r}: a {what} state runs its branches instead of a task; give each "
            "its compensation" + (" in its Branch" if what == "parallel" else " in the Map")
        )
    if state.final:
        raise fail(f"state {name!r} is final and so cannot run {what} tasks")
    if state.map is not None:
        m = state.map
        if not isinstance(m, Map):
            raise fail(f"state {name!r}: map must be Map(...), not {m!r}")
        if not isinstance(m.items, str) or not m.items:
            raise fail(f"state {name!r}: Map items must be a context key, not {m.items!r}")
        results = m.results if m.results is not None else name
        if not isinstance(results, str) or not results or results == m.items:
            raise fail(f"state {name!r}: Map results must be a context key other than items")
        if not (isinstance(m.max_concurrency, int) and 1 <= m.max_concurrency <= 1000):
            raise fail(
                f"state {name!r}: Map max_concurrency must be 1 to 1000 (the tries one "
                f"commit may order), not {m.max_concurrency!r}"
            )
        if m.tolerated_failures is not None and not (
            isinstance(m.tolerated_failures, int) and m.tolerated_failures >= 0
        ):
            raise fail(f"state {name!r}: Map tolerated_failures must be a count >= 0")
        pct = m.tolerated_failure_percentage
        if pct is not None and not (isinstance(pct, int | float) and 0 <= pct <= 100):
            raise fail(f"state {name!r}: Map tolerated_failure_percentage must be 0 to 100")
        task = spec(m.task, "map task")
        assert task is not None
        undo = spec(m.compensation, "map compensation")
        if isinstance(task, ChildSpec):
            if undo is not None:
                raise fail(f"state {name!r}: a map of children is undone by their own steps")
            undo = task
        return (), MapSpec(
            task, undo, m.items, results, m.max_concurrency, m.tolerated_failures, pct
        )
    branches = state.parallel
    if not isinstance(branches, Mapping) or not branches:
        raise fail(f"state {name!r}: parallel must be a dict of branch name -> Branch(...)")
    specs: list[BranchSpec] = []
    for branch, declared in branches.items():
        if not (isinstance(branch, str) and branch.isidentifier()):
            raise fail(f"state {name!r}: branch name {branch!r} is not an identifier")
        if not isinstance(declared, Branch):
            declared = Branch(declared)  # a task alone: a branch with no compensation
        task = spec(declared.task, f"branch {branch!r}")
        assert task is not None
        undo = spec(declared.compensation, f"branch {branch!r} compensation")
        if isinstance(task, ChildSpec):
            if undo is not None:
                raise fail(
                    f"state {name!r}: branch {branch!r} runs a child, undone by its own steps"
                )
            undo = task
        specs.append(BranchSpec(branch, task, undo))
    return tuple(specs), None


def error_names(
    refs: object,
    role: str,
    fail: Callable[[str], DefinitionError],
    *,
    empty_ok: bool = False,
) -> frozenset[str]:
    """The class names of error types given as classes or names, one or a list of them.

    A task's failure reports its class and base classes by name (orchestrator.runtime.tasks),
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

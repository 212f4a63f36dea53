"""One application of one event, as it moves the instance: entering a state (its
task, its notifications, its timeout) and running the compensation, newest
step first.

The transition function (orchestrator.core.machine) decides what an event
means; the table (orchestrator.core.table) finds the row it fires; the moves
here are what both end in. They are kept apart from the deciding because
every path ends in them: a new entry withdraws what an earlier entry of the
same step ordered, cancels the timers of the entry it leaves, and follows
the tries in flight that a compensation may have to undo.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.effects import (
    CancelTimers,
    Effect,
    PublishEvent,
    RunTask,
    SendNotification,
    SignalChild,
    StartChild,
    StartTimer,
)
from orchestrator.core.events import Event
from orchestrator.core.instance import Fan, Instance
from orchestrator.core.spec import (
    CANCELLED,
    ChildSpec,
    Definition,
    StateSpec,
    TaskSpec,
    split_step,
    step_name,
)


class GuardFailed(Exception):
    """A guard, a row's `save` or a child's `input` function (the workflow author's code)
    raised; the event cannot be applied and goes to the dead letters."""


_UNDOING = ""  # in Moves.entered: the compensation run, which leaves the state entered


@dataclass(frozen=True)
class Passed:
    """A state entered and left in one step, and the event that moved it on."""

    state: str
    left_on: str  # that event's type
    left_by: str  # its id


class Moves:
    """The working state of one application, and the moves it makes; not shared, not
    reused (orchestrator.core.machine applies one event with it)."""

    def __init__(self, definition: Definition, inst: Instance, event: Event) -> None:
        self.d = definition
        self.inst = inst
        self.event = event
        self.effects: list[Effect] = []
        self.outcome = "ignored"
        self.note = ""
        self.entry_mark: int | None = None  # where the effects of an entry made in this step begin
        self.moving = event  # the event whose row is firing: this one, or a parked one
        self.entered: list[tuple[str, Event]] = []  # states entered in this step, and by what

    def passed(self) -> tuple[Passed, ...]:
        """The states entered in this step and left in it, each with what moved it on."""
        return tuple(
            Passed(state, by.type, by.id)
            for (state, _), (_, by) in zip(self.entered, self.entered[1:], strict=False)
            if state != _UNDOING
        )

    # -- entering states ------------------------------------------------------

    def _enter(self, name: str, *, notify: bool = True, kept: Fan | None = None) -> None:
        """Enter a state: its task (or branches), notifications and timeout. `kept`: the
        branches of the entry `retry` resumes, whose completed ones do not run again."""
        state = self.d.states.get(name)
        seq = self.inst.seq
        self._new_entry()
        self.entered.append((name, self.moving))
        if state is None or state.final:  # the instance ends here: its deadline goes
            self._withdraw_deadline()
            self._close_children()
        if state is None:  # the built-in cancel target
            assert name == CANCELLED
            self.inst = self.inst.evolve(
                state=name,
                status="cancelled",
                entered_seq=seq,
                attempt=0,
                lost=0,
                compensating_to=None,
                compensations=(),
                inflight=(),
                halted=False,
                parked=(),
                fan=None,
            )
            return
        status = state.outcome if state.final else "running"
        self.inst = self.inst.evolve(
            state=name,
            status=status,
            entered_seq=seq,
            attempt=1 if state.task else 0,
            lost=0,
            compensating_to=None,
            halted=False,
            fan=None,
        )
        if state.final:  # nothing can apply any more: drop what waited
            # a completed child keeps its stack: its parent may compensate past it (UNDO)
            stack = self.inst.compensations if self._undoable_child(status) else ()
            self.inst = self.inst.evolve(compensations=stack, inflight=(), parked=())
        if state.task is not None:
            self.effects.append(self._run(state.task, "task", name))
        for spec in state.notify if notify else ():
            to = spec.to(self.inst.context) if callable(spec.to) else None
            if isinstance(spec.to, str):
                value = self.inst.context.get(spec.to)
                to = None if value is None else str(value)
            self.effects.append(
                SendNotification(
                    spec.channel,
                    to,
                    spec.template,
                    self.inst.context,
                    self.d.templates,
                    spec.urgent,
                )
            )
        if notify and state.publish:
            self._publish(state.publish)
        if state.timeout is not None:
            self._arm(self.event.at + state.timeout, state.timeout_event, {"state": name})
        elif state.timeout_at is not None:
            due = moment(self.inst.context.get(state.timeout_at))
            if due is None:
                self.note = (
                    self.note + f"; no timeout: context[{state.timeout_at!r}] is not a moment "
                    "(Unix seconds, or ISO 8601 with its zone)"
                ).lstrip("; ")
            else:
                self._arm(due, state.timeout_event, {"state": name})
        if state.fans_out:
            self._fan_out(state, kept)

    def _publish(self, types: tuple[str, ...]) -> None:
        """The published events a state's entry or a row names, built from the context."""
        for kind in types:
            spec = self.d.published[kind]
            data = self._built(spec.data, self.inst.context, f"data of published event {kind}")
            self.effects.append(PublishEvent(kind, data, self.event.at, spec.version))

    @staticmethod
    def _built(
        given: tuple[str, ...] | Callable[[dict[str, Any]], Any] | None,
        context: Mapping[str, Any],
        what: str,
    ) -> dict[str, Any]:
        """A dict built from the context as a child's `input` or a published event's
        `data` says: the whole context (None), these keys, or the author's function,
        whose failure stops the event as a guard's does."""
        if given is None:
            return dict(context)
        if isinstance(given, tuple):
            return {k: context[k] for k in given if k in context}
        try:
            data = given(dict(context))
        except Exception as exc:
            raise GuardFailed(f"{what} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(data, dict):
            raise GuardFailed(f"{what} returned {type(data).__name__}, not a dict")
        return data

    # -- branches: a parallel state's, a map's items ---------------------------

    def _fan_out(self, state: StateSpec, kept: Fan | None) -> None:
        """Start the branches of a parallel or map state entry (a map: its first items,
        up to `max_concurrency`); completed ones of a resumed entry are kept."""
        results = kept.results if kept is not None else {}
        if state.map is not None:
            items = self.inst.context.get(state.map.items)
            if not isinstance(items, list):
                failure = {
                    "error_type": "MapItemsNotAList",
                    "message": f"context[{state.map.items!r}] is "
                    f"{type(items).__name__}, not a list of items",
                }
                self.inst = self.inst.evolve(fan=Fan(failures={"items": failure}))
                self._fan_settled()
                return
            self.inst = self.inst.evolve(fan=Fan(results=results, total=len(items)))
        else:
            self.inst = self.inst.evolve(
                fan=Fan(results=results, started=len(state.parallel), total=len(state.parallel))
            )
            for branch in state.parallel:
                if branch.name not in results:
                    self._start_branch(state, branch.name)
        self._fan_more()

    def _fan_more(self) -> None:
        """Start map items in order while fewer than `max_concurrency` run; when all have
        settled, the state's answer is due (`_fan_settled`)."""
        state = self._current()
        fan = self.inst.fan
        assert fan is not None
        if state.map is not None and not self._fan_failing():
            room = state.map.max_concurrency - len(fan.tries)
            while room > 0 and fan.started < fan.total:
                index = str(fan.started)
                self.inst = self.inst.evolve(fan=replace(fan, started=fan.started + 1))
                if index not in fan.results:
                    self._start_branch(state, index)
                    room -= 1
                fan = self.inst.fan
                assert fan is not None
        if self._fan_failing():
            if state.on_failure == "fail_fast" or not fan.tries:
                self._fan_settled()
        elif fan.settled:
            self._fan_settled()

    def _fan_failing(self) -> bool:
        """Whether the branches failed beyond what the state tolerates."""
        fan = self.inst.fan
        assert fan is not None
        if not fan.failures:
            return False
        spec = self._current().map
        if spec is None or not all(b.isdigit() for b in fan.failures):
            return True
        return not spec.tolerates(len(fan.failures), fan.total)

    def _fan_settled(self) -> None:
        """Every branch settled (or one failed beyond tolerance): answer the state's table
        (orchestrator.core.machine)."""
        raise NotImplementedError

    def _start_branch(self, state: StateSpec, branch: str, attempt: int = 1) -> None:
        fan = self.inst.fan
        assert fan is not None
        lost = fan.tries.get(branch, (0, 0))[1] if attempt > 1 else 0
        self.inst = self.inst.evolve(fan=replace(fan, tries={**fan.tries, branch: (attempt, lost)}))
        task = state.branch_task(branch, "task")
        assert task is not None
        self.effects.append(self._run(task, "task", step_name(state.name, branch), attempt))

    # -- the workflow's deadline ------------------------------------------------

    def _deadline_id(self) -> str:
        return f"{self.inst.id}-deadline"

    def _arm_deadline(self) -> None:
        """Arm the whole instance's deadline: bound to no state entry, so entering and
        leaving states keep it; ending the instance withdraws it."""
        if self.d.deadline is None:
            return
        timer = self._deadline_id()
        data = {"timer": timer, "deadline": self.d.deadline}
        self.effects.append(
            StartTimer(timer, self.event.at + self.d.deadline, self.d.deadline_event, data)
        )

    def _withdraw_deadline(self) -> None:
        if self.d.deadline is not None:
            self.effects.append(CancelTimers((self._deadline_id(),)))

    def _arm(self, due: float, event_type: str, data: dict[str, Any]) -> None:
        """Set a timer bound to the current entry; leaving the entry cancels it."""
        bound = self.inst.entered_seq
        timer_id = self._timer_id(event_type, int(data.get("attempt", 0)), data.get("branch"))
        data = {**data, "entered_seq": bound, "timer": timer_id}
        self.inst = self.inst.evolve(timers=(*self.inst.timers, timer_id))
        self.effects.append(StartTimer(timer_id, due, event_type, data))

    def _new_entry(self) -> None:
        """Leave the current entry for a new one. An entry made earlier in this same step
        (a parked event moved the instance on at once) never started: its task and timers
        are withdrawn, not ordered, so nothing runs that nobody waits for."""
        if self.entry_mark is not None:
            entry = self.effects[self.entry_mark :]
            kept = [e for e in entry if not isinstance(e, RunTask | StartTimer | StartChild)]
            dropped = {e.id for e in entry if isinstance(e, StartTimer)}
            withdrawn = {
                (e.entered_seq, e.attempt, e.state) for e in entry if isinstance(e, RunTask)
            }
            unborn = {e.child_id for e in entry if isinstance(e, StartChild)}
            withdrawn |= {
                (e.parent["entered_seq"], e.parent["attempt"], e.parent["state"])
                for e in entry
                if isinstance(e, StartChild)
            }
            self.effects[self.entry_mark :] = kept
            self.inst = self.inst.evolve(
                timers=tuple(t for t in self.inst.timers if t not in dropped),
                inflight=tuple(t for t in self.inst.inflight if t not in withdrawn),
                children={k: v for k, v in self.inst.children.items() if v not in unborn},
            )
        self._disarm()
        self.entry_mark = len(self.effects)

    def _timer_id(self, event_type: str, attempt: int, branch: str | None = None) -> str:
        step = event_type if branch is None else f"{event_type}-{branch}"
        return f"{self.inst.id}-{self.inst.entered_seq}-{step}-{attempt}"

    def _disarm(self) -> None:
        if self.inst.timers:
            self.effects.append(CancelTimers(self.inst.timers))
            self.inst = self.inst.evolve(timers=())

    def _run(self, spec: TaskSpec, kind: str, step: str, attempt: int | None = None) -> Effect:
        """The order to run a try of a step (a state, or "state/branch"); a task's try of a
        step that names a compensation is followed in flight, so that nothing it finishes
        is left undone."""
        state, branch = split_step(step)
        attempt = self.inst.attempt if attempt is None else attempt
        if isinstance(spec, ChildSpec):
            return self._child(spec, kind, step, attempt)
        if kind == "task" and self.d.states[state].step_task(branch, "compensation"):
            key = (self.inst.entered_seq, attempt, step)
            self.inst = self.inst.evolve(inflight=(*self.inst.inflight, key))
        return RunTask(
            task=spec.path,
            kind="compensation" if kind == "compensation" else "task",
            state=step,
            attempt=attempt,
            entered_seq=self.inst.entered_seq,
            timeout=spec.timeout,
            context=self._task_context(state, branch),
        )

    # -- child workflows ---------------------------------------------------------

    def _child(self, spec: ChildSpec, kind: str, step: str, attempt: int) -> Effect:
        """Start a child for a step (its id derived from this instance, the entry and the
        step: applying the step again starts no second one), or undo a completed one."""
        binding = {
            "instance": self.inst.id,
            "state": step,
            "entered_seq": self.inst.entered_seq,
            "attempt": attempt,
            "kind": "compensation" if kind == "compensation" else "task",
            "output": spec.output,
        }
        if kind == "compensation":
            child = self.inst.children.get(step, "")
            return SignalChild(child, ev.UNDO, {"parent": binding})
        child = f"{self.inst.id}-{self.inst.entered_seq}-{step.replace('/', '-')}"
        if spec.parent_close == "cancel":  # followed: the parent's compensation waits for it
            key = (self.inst.entered_seq, attempt, step)
            self.inst = self.inst.evolve(inflight=(*self.inst.inflight, key))
        self.inst = self.inst.evolve(children={**self.inst.children, step: child})
        state, branch = split_step(step)
        context = self._task_context(state, branch)
        data = self._built(spec.input, context, f"input of child {spec.workflow} of {step}")
        return StartChild(spec.workflow, child, data, binding)

    def _close_children(self) -> None:
        """The parent is cancelled, compensates or ends: its running children whose
        `parent_close` is "cancel" are cancelled (each runs its own compensations)."""
        for _, _, step in self.inst.inflight:
            state, branch = split_step(step)
            spec = self.d.states[state].step_task(branch, "task")
            child = self.inst.children.get(step)
            if isinstance(spec, ChildSpec) and spec.parent_close == "cancel" and child:
                reason = f"its parent {self.inst.id} is {self.inst.status}"
                self.effects.append(SignalChild(child, ev.CANCEL, {"reason": reason}))

    def _undoable_child(self, status: str) -> bool:
        return self.inst.parent is not None and status == "completed"

    def _task_context(self, state: str, branch: str | None) -> dict[str, Any]:
        """What a try gets: the context; a map item's, the context without the items and
        with its `item` and `index` (10,000 items are not sent 10,000 times)."""
        spec = self.d.states[state].map
        if branch is None or spec is None:
            return self.inst.context
        items = self.inst.context.get(spec.items)
        index = int(branch)
        item = items[index] if isinstance(items, list) and index < len(items) else None
        context = {k: v for k, v in self.inst.context.items() if k != spec.items}
        return {**context, "item": item, "index": index}

    # -- the compensation run ------------------------------------------------

    def _begin_compensation(self, target: str, reason: str | None = None) -> None:
        """Undo the finished steps, newest first, then enter `target`; first wait for the
        tries still in flight of states that name a compensation (each settles by its
        answer, its timeout, or the watchdog reporting it lost)."""
        self.inst = self.inst.evolve(
            status="compensating", compensating_to=target, reason=reason, halted=False, fan=None
        )
        self._new_entry()  # withdraws a task ordered earlier in this step, never to run
        self._close_children()
        if self.entered:  # a state entered in this step is left for the compensation run
            self.entered.append((_UNDOING, self.moving))
        if self.inst.inflight:
            self.inst = self.inst.evolve(entered_seq=self.inst.seq, attempt=0, lost=0)
            self.outcome = "compensating"
            self.note = (self.note + f"; waits for {self._waiting()} in flight").lstrip("; ")
            return
        self._next_compensation()

    def _next_compensation(self) -> None:
        if not self.inst.compensations:
            target = self.inst.compensating_to
            assert target is not None
            self._enter(target)
            self.outcome = "transition"
            return
        step = self.inst.compensations[-1]
        spec = self._compensation_spec()
        if isinstance(spec, ChildSpec) and step not in self.inst.children:
            self.inst = self.inst.evolve(compensations=self.inst.compensations[:-1])
            self._next_compensation()  # no child was started for it: nothing to undo
            return
        self._new_entry()
        self.inst = self.inst.evolve(entered_seq=self.inst.seq, attempt=1, lost=0)
        self.effects.append(self._run(spec, "compensation", self._work_state()))
        self.outcome = "compensating"

    def _compensation_spec(self) -> TaskSpec:
        state, branch = split_step(self.inst.compensations[-1])
        spec = self.d.states[state].step_task(branch, "compensation")
        assert spec is not None
        return spec

    def _work_state(self) -> str:
        if self.inst.status == "compensating":
            return self.inst.compensations[-1]
        assert self.inst.state is not None
        return self.inst.state

    def _waiting(self) -> str:
        return ", ".join(f"{state} (try {attempt})" for _, attempt, state in self.inst.inflight)

    def _current(self) -> StateSpec:
        assert self.inst.state is not None
        return self.d.states[self.inst.state]


def moment(value: Any) -> float | None:
    """A moment given in the context: Unix seconds, or ISO 8601 text with its zone
    (a time without a zone is no moment: whose 09:00?)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value == value and abs(value) < 1e11 else None
    if isinstance(value, str) and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed.timestamp() if parsed.tzinfo is not None else None
    return None

"""The transition function: (definition, instance, event) -> (instance', effects).

Pure: no I/O, no clock, no randomness. Time arrives on the event, and the
retry jitter is derived from the instance id and the try number, so applying
the same events to the same instance always gives the same result. That is
what makes `replay` possible and what the tests lean on.

What one event does, in order:
  1. a finished instance ignores everything (late events are recorded, not applied);
  2. an answer of a try still in flight of a state that names a compensation,
     arriving after that state was left, is late: a completion pushes its
     compensation (the instance compensating waits for such tries to settle);
     any other event bound to a state entry or a task try (it carries
     `entered_seq`) that no longer matches is stale and ignored;
  3. engine events (start, retries, compensation, cancel) are handled here;
  4. anything else is matched against the transition table; the first row
     whose event, source and guard match fires. With no row, the event is
     parked and retried after every later transition; a task failure with no
     row fails the instance (`retry` resumes it).

States passed through in one step (an early, parked event moves the instance
on as it enters) are in `Result.passed`; they send their notifications, but
only the state the step ends in starts its task and its timeout, as a
statechart starts an `invoke` only for the states still active at the end of
a step.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.definition import (
    CANCELLED,
    LOST_TRIES,
    TASK_LOST,
    Definition,
    StateSpec,
    TaskSpec,
    TransitionSpec,
)
from orchestrator.core.effects import CancelTimers, Effect, Notify, RunTask, StartTimer
from orchestrator.core.events import Event
from orchestrator.core.failures import error_types, retryable
from orchestrator.core.instance import Instance


class GuardFailed(Exception):
    """A guard (or a row's `save`) raised; the event cannot be applied and goes to the
    dead letters."""


PASSED = "passed"  # the outcome shown for a state passed through (orchestrator.store.instances)


_UNDOING = ""  # in _Step.entered: the compensation run, which leaves the state entered


@dataclass(frozen=True)
class Passed:
    """A state entered and left in one step, and the event that moved it on."""

    state: str
    left_on: str  # that event's type
    left_by: str  # its id


@dataclass(frozen=True)
class Result:
    instance: Instance
    effects: tuple[Effect, ...]
    # started | transition | parked | ignored | retry | compensating | late | failed
    outcome: str
    note: str = ""
    passed: tuple[Passed, ...] = ()


def transition(definition: Definition, instance: Instance, event: Event) -> Result:
    """Apply one event. `instance.seq` grows by one whatever happens."""
    inst = instance.evolve(seq=instance.seq + 1, updated_at=event.at)
    step = _Step(definition, inst, event)
    step.run()
    return Result(step.inst, tuple(step.effects), step.outcome, step.note, step.passed())


def already_applied(instance: Instance, event: Event) -> Result:
    """An event whose id this instance applied before (delivered twice): recorded in
    the history, so the copy is seen, and never applied again."""
    inst = instance.evolve(seq=instance.seq + 1, updated_at=event.at)
    return Result(inst, (), "ignored", "duplicate: this event id was applied before")


class _Step:
    """The working state of one application; not shared, not reused."""

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

    # -- dispatch -------------------------------------------------------------

    def run(self) -> None:
        event, inst = self.event, self.inst
        if event.type == ev.STARTED:
            if inst.state is not None:
                self.note = "already started"
                return
            self.inst = inst.evolve(status="running", context=dict(event.data.get("input") or {}))
            self.outcome = "started"
            self._enter(self.d.initial)
            self._unpark()
            return
        if inst.state is None:
            self.note = "instance not started"
            return
        fired = event.data.get("timer")
        if fired in inst.timers:
            self.inst = inst = inst.evolve(timers=tuple(t for t in inst.timers if t != fired))
        if inst.finished:
            self.note = f"instance already {inst.status}"
            return
        if event.type == ev.RESUME:
            self._resume()
            return
        if event.type in (ev.TASK_COMPLETED, ev.TASK_FAILED) and self._late_answer():
            return
        bound = event.entered_seq
        if bound is not None and bound != inst.entered_seq:
            self.note = f"stale: answers entry {bound}, current entry is {inst.entered_seq}"
            return
        match event.type:
            case ev.CANCEL:
                self._cancel()
            case ev.RETRY_DUE:
                self._retry_due()
            case ev.COMPENSATION_COMPLETED | ev.COMPENSATION_FAILED:
                self._compensation_answer()
            case ev.TASK_COMPLETED | ev.TASK_FAILED if inst.status == "compensating":
                self.note = "task answer while compensating"
            case ev.TASK_COMPLETED:
                if self._task_answer_current():
                    self._task_completed()
            case ev.TASK_FAILED:
                if self._task_answer_current():
                    self._task_failed()
            case _ if event.type not in self.d.event_types:
                self.note = f"no transition of {self.d.name} reacts to {event.type}"
            case _ if inst.status in ("compensating", "failed"):
                self._park(f"waits: the instance is {inst.status}")
            case _:
                self._match(park=True)

    # -- tasks ----------------------------------------------------------------

    def _task_answer_current(self) -> bool:
        attempt = int(self.event.data.get("attempt", 0))
        if self.inst.attempt == 0 or attempt != self.inst.attempt:
            self.note = f"stale: answers try {attempt}, current try is {self.inst.attempt}"
            return False
        return True

    def _answered_try(self) -> tuple[int, int, str] | None:
        """The in-flight try this task answer settles, if it is one the instance follows."""
        data = self.event.data
        try:
            key = (int(data["entered_seq"]), int(data["attempt"]), str(data["state"]))
        except (KeyError, TypeError, ValueError):
            return None
        return key if key in self.inst.inflight else None

    def _settle(self, key: tuple[int, int, str]) -> None:
        self.inst = self.inst.evolve(inflight=tuple(t for t in self.inst.inflight if t != key))

    def _late_answer(self) -> bool:
        """An answer of a try in flight of a state that names a compensation, arriving
        after the state was left (or while the instance compensates): a completion is a
        finished step, so its result enters the context and its compensation is pushed;
        a failure (or a try lost with its worker) undid nothing. A compensation run that
        waited for it starts once nothing is left in flight. False: not a late answer."""
        key = self._answered_try()
        inst = self.inst
        current = (
            inst.status == "running"
            and key is not None
            and key[:2] == (inst.entered_seq, inst.attempt)
            and key[2] == inst.state
        )
        if key is None or current:
            return False
        self._settle(key)
        state = key[2]
        self.outcome = "late"
        if self.event.type == ev.TASK_COMPLETED:
            context = merge_result(self.inst.context, state, self.event.data.get("result"))
            self.inst = self.inst.evolve(
                context=context, compensations=(*self.inst.compensations, state)
            )
            self.note = f"late completion of {state} (left): its compensation is due"
        else:
            self.note = f"late failure of {state} (left): nothing to undo"
        if self.inst.status == "compensating" and self.inst.attempt == 0:
            if self.inst.inflight:
                self.note += f"; still waiting for {self._waiting()}"
            else:
                self._next_compensation()
                if not self.inst.finished and self.inst.status != "compensating":
                    self._unpark()
                self.outcome = "late"
        return True

    def _waiting(self) -> str:
        return ", ".join(f"{state} (try {attempt})" for _, attempt, state in self.inst.inflight)

    def _task_completed(self) -> None:
        state = self._current()
        key = (self.inst.entered_seq, self.inst.attempt, state.name)
        context = merge_result(self.inst.context, state.name, self.event.data.get("result"))
        self._settle(key)
        stack = self.inst.compensations
        if state.compensation is not None:
            stack = (*stack, state.name)
        self.inst = self.inst.evolve(context=context, compensations=stack, attempt=0, lost=0)
        self._match(park=True)

    def _task_failed(self) -> None:
        state = self._current()
        assert state.task is not None
        self._settle((self.inst.entered_seq, self.inst.attempt, state.name))
        if self._schedule_retry(state.task):
            return
        self.inst = self.inst.evolve(attempt=0, lost=0)
        if self._match(park=False):
            return
        data = self.event.data
        error = f"{data.get('error_type')}: {data.get('message')}"
        self.inst = self.inst.evolve(
            status="failed",
            halted=True,
            reason=f"state {state.name!r}: task {state.task.path} failed: {error}; "
            f"no transition handles task.failed there",
        )
        self.outcome = "failed"
        self.note = "task failed and nothing handles it: the instance failed (retry resumes it)"

    def _schedule_retry(self, task: TaskSpec) -> bool:
        attempt, lost = self.inst.attempt, self.inst.lost
        if self._timer_id(ev.RETRY_DUE, attempt + 1) in self.inst.timers:
            # A second report of a try already failed (the watchdog's, then the worker's)
            self.outcome, self.note = "ignored", f"try {attempt} already failed; retry armed"
            return True
        was_lost = self.event.data.get("error_type") == TASK_LOST
        if was_lost and lost < LOST_TRIES:
            lost += 1  # the worker died: not the task's failure, not one of its tries
            what = f"try {attempt} lost with its worker ({lost} of {LOST_TRIES} lost tries)"
        elif not retryable(task, self.event.data):
            self.note = f"try {attempt - lost} of {task.attempts} failed with an error not retried"
            return False
        elif attempt - lost >= task.attempts:
            return False
        else:
            what = f"try {attempt - lost} of {task.attempts} failed"
        delay = backoff_delay(task, attempt, self.inst.id)
        self.inst = self.inst.evolve(lost=lost)
        self._arm(self.event.at + delay, ev.RETRY_DUE, {"attempt": attempt + 1})
        self.outcome = "retry"
        self.note = f"{what}; next in {delay:.2f}s"
        return True

    def _retry_due(self) -> None:
        attempt = int(self.event.data.get("attempt", 0))
        if attempt != self.inst.attempt + 1:
            self.note = f"stale retry for try {attempt}"
            return
        state = self._current()
        compensating = self.inst.status == "compensating"
        spec = self._compensation_spec() if compensating else state.task
        assert spec is not None
        self.inst = self.inst.evolve(attempt=attempt)
        self.effects.append(
            self._run(spec, "compensation" if compensating else "task", self._work_state())
        )
        self.outcome = "retry"

    # -- the table ------------------------------------------------------------

    def _match(self, *, park: bool) -> bool:
        row = self._find(self.event)
        if row is None:
            if park:
                self._park(f"no transition on {self.event.type} from {self.inst.state}")
            return False
        self._fire(row)
        self._unpark()
        return True

    def _park(self, note: str) -> None:
        self.inst = self.inst.evolve(parked=(*self.inst.parked, self.event))
        self.outcome = "parked"
        self.note = note

    def _find(self, event: Event) -> TransitionSpec | None:
        state = self.inst.state
        for row in self.d.transitions:
            if row.event != event.type:
                continue
            if row.sources is not None and state not in row.sources:
                continue
            if row.sources is None and state is not None and self.d.states[state].final:
                continue
            if row.errors is not None and row.errors.isdisjoint(error_types(event.data)):
                continue
            if row.guard is not None:
                try:
                    allowed = bool(row.guard(self.inst.context, event.data))
                except Exception as exc:
                    raise GuardFailed(
                        f"guard of transition on {row.event} from {state} raised "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                if not allowed:
                    continue
            return row
        return None

    def _fire(self, row: TransitionSpec) -> None:
        self.outcome = "transition"
        if row.save is not None:
            self._save(row)
        if row.internal:  # consumed where it stands: no exit, no entry, no effects
            self.note = (self.note + "; internal").lstrip("; ")
        elif row.compensate and (self.inst.compensations or self.inst.inflight):
            self._begin_compensation(row.target)
        else:
            self._enter(row.target)

    def _save(self, row: TransitionSpec) -> None:
        """The firing event's data into the context, as the row's `save` says."""
        data = self.moving.data
        save = row.save
        if save is True:
            saved = dict(data)
        elif isinstance(save, str):
            saved = {save: data}
        else:
            assert callable(save)
            try:
                saved = save(dict(self.inst.context), dict(data))
            except Exception as exc:
                raise GuardFailed(
                    f"save of transition on {row.event} from {self.inst.state} raised "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(saved, dict):
                raise GuardFailed(
                    f"save of transition on {row.event} from {self.inst.state} returned "
                    f"{type(saved).__name__}, not a dict"
                )
        self.inst = self.inst.evolve(context={**self.inst.context, **saved})

    def _unpark(self) -> None:
        """Retry parked events after a transition, oldest first, until none fires."""
        progressed = True
        while progressed and self.inst.parked and not self.inst.finished:
            progressed = False
            for parked in self.inst.parked:
                bound = parked.entered_seq
                if bound is not None and bound != self.inst.entered_seq:
                    self._drop_parked(parked)
                    progressed = True
                    break
                if self.inst.status == "compensating":
                    return
                row = self._find(parked)
                if row is not None:
                    self._drop_parked(parked)
                    self.moving = parked
                    self._fire(row)
                    self.note = (self.note + f"; applied parked {parked.type}").lstrip("; ")
                    progressed = True
                    break

    def _drop_parked(self, event: Event) -> None:
        self.inst = self.inst.evolve(parked=tuple(p for p in self.inst.parked if p is not event))

    # -- entering states ------------------------------------------------------

    def _enter(self, name: str, *, notify: bool = True) -> None:
        state = self.d.states.get(name)
        seq = self.inst.seq
        self._new_entry()
        self.entered.append((name, self.moving))
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
        )
        if state.final:  # nothing can apply any more: drop what waited
            self.inst = self.inst.evolve(compensations=(), inflight=(), parked=())
        if state.task is not None:
            self.effects.append(self._run(state.task, "task", name))
        for spec in state.notify if notify else ():
            to = spec.to(self.inst.context) if callable(spec.to) else None
            if isinstance(spec.to, str):
                value = self.inst.context.get(spec.to)
                to = None if value is None else str(value)
            self.effects.append(
                Notify(
                    spec.channel,
                    to,
                    spec.template,
                    self.inst.context,
                    self.d.templates,
                    spec.urgent,
                )
            )
        if state.timeout is not None:
            self._arm(self.event.at + state.timeout, state.timeout_event, {"state": name})

    def _arm(self, due: float, event_type: str, data: dict[str, Any]) -> None:
        """Set a timer bound to the current entry; leaving the entry cancels it."""
        bound = self.inst.entered_seq
        timer_id = self._timer_id(event_type, int(data.get("attempt", 0)))
        data = {**data, "entered_seq": bound, "timer": timer_id}
        self.inst = self.inst.evolve(timers=(*self.inst.timers, timer_id))
        self.effects.append(StartTimer(timer_id, due, event_type, data))

    def _new_entry(self) -> None:
        """Leave the current entry for a new one. An entry made earlier in this same step
        (a parked event moved the instance on at once) never started: its task and timers
        are withdrawn, not ordered, so nothing runs that nobody waits for."""
        if self.entry_mark is not None:
            kept = [
                e
                for e in self.effects[self.entry_mark :]
                if not isinstance(e, RunTask | StartTimer)
            ]
            dropped = {e.id for e in self.effects[self.entry_mark :] if isinstance(e, StartTimer)}
            withdrawn = {
                (e.entered_seq, e.attempt, e.state)
                for e in self.effects[self.entry_mark :]
                if isinstance(e, RunTask)
            }
            self.effects[self.entry_mark :] = kept
            self.inst = self.inst.evolve(
                timers=tuple(t for t in self.inst.timers if t not in dropped),
                inflight=tuple(t for t in self.inst.inflight if t not in withdrawn),
            )
        self._disarm()
        self.entry_mark = len(self.effects)

    def _timer_id(self, event_type: str, attempt: int) -> str:
        return f"{self.inst.id}-{self.inst.entered_seq}-{event_type}-{attempt}"

    def _disarm(self) -> None:
        if self.inst.timers:
            self.effects.append(CancelTimers(self.inst.timers))
            self.inst = self.inst.evolve(timers=())

    def _run(self, spec: TaskSpec, kind: str, state: str) -> RunTask:
        """The order to run a try; a task's try of a state that names a compensation is
        followed in flight, so that nothing it finishes is left undone."""
        if kind == "task" and self.d.states[state].compensation is not None:
            key = (self.inst.entered_seq, self.inst.attempt, state)
            self.inst = self.inst.evolve(inflight=(*self.inst.inflight, key))
        return RunTask(
            task=spec.path,
            kind="compensation" if kind == "compensation" else "task",
            state=state,
            attempt=self.inst.attempt,
            entered_seq=self.inst.entered_seq,
            timeout=spec.timeout,
            context=self.inst.context,
        )

    # -- compensation ---------------------------------------------------------

    def _begin_compensation(self, target: str, reason: str | None = None) -> None:
        """Undo the finished steps, newest first, then enter `target`; first wait for the
        tries still in flight of states that name a compensation (each settles by its
        answer, its timeout, or the watchdog reporting it lost)."""
        self.inst = self.inst.evolve(
            status="compensating", compensating_to=target, reason=reason, halted=False
        )
        self._new_entry()  # withdraws a task ordered earlier in this step, never to run
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
        self._new_entry()
        self.inst = self.inst.evolve(entered_seq=self.inst.seq, attempt=1, lost=0)
        spec = self._compensation_spec()
        self.effects.append(self._run(spec, "compensation", self._work_state()))
        self.outcome = "compensating"

    def _compensation_spec(self) -> TaskSpec:
        spec = self.d.states[self.inst.compensations[-1]].compensation
        assert spec is not None
        return spec

    def _work_state(self) -> str:
        if self.inst.status == "compensating":
            return self.inst.compensations[-1]
        assert self.inst.state is not None
        return self.inst.state

    def _compensation_answer(self) -> None:
        if self.inst.status not in ("compensating", "failed") or not self._task_answer_current():
            if not self.note:
                self.note = "compensation answer while not compensating"
            return
        if self.event.type == ev.COMPENSATION_COMPLETED:
            context = merge_result(
                self.inst.context, self.inst.compensations[-1], self.event.data.get("result")
            )
            self.inst = self.inst.evolve(
                context=context, compensations=self.inst.compensations[:-1], attempt=0, lost=0
            )
            self.outcome = "compensating"
            self._next_compensation()
            if not self.inst.finished and self.inst.status != "compensating":
                self._unpark()
            return
        if self._schedule_retry(self._compensation_spec()):
            return
        failed = self.inst.compensations[-1]
        error = f"{self.event.data.get('error_type')}: {self.event.data.get('message')}"
        self.inst = self.inst.evolve(
            status="failed",
            attempt=0,
            reason=f"compensation of state {failed!r} failed: {error}",
        )
        self.outcome = "failed"

    def _cancel(self) -> None:
        target = self.d.cancel_state
        reason = self.event.data.get("reason")
        self.inst = self.inst.evolve(reason=f"cancelled: {reason}" if reason else "cancelled")
        self.outcome = "transition"
        if self.inst.status == "compensating":
            self.inst = self.inst.evolve(compensating_to=target)
            return
        if self.inst.compensations or self.inst.inflight:  # also after a failed compensation
            self._begin_compensation(target, self.inst.reason)
        else:
            self._enter(target)

    def _resume(self) -> None:
        """Re-run what stopped the instance: its failed compensation, or its failed task."""
        inst = self.inst
        state = self._current()
        if inst.status == "failed" and inst.compensating_to is not None:
            self.inst = inst.evolve(status="compensating", reason=None)
            self._next_compensation()
            self.outcome = "retry"
        elif inst.halted or (
            inst.status == "running" and state.task is not None and inst.attempt == 0
        ):
            self.inst = inst.evolve(status="running", halted=False, reason=None)
            self._enter(state.name, notify=False)
            self._unpark()  # drops the answers bound to the entry just left
            self.outcome = "retry"
        else:
            self.note = "nothing to retry: no failed task or compensation"

    def _current(self) -> StateSpec:
        assert self.inst.state is not None
        return self.d.states[self.inst.state]


def merge_result(context: dict[str, Any], state: str, result: Any) -> dict[str, Any]:
    """How a task's result enters the context.

    A dict is merged key by key (its keys replace those already there); None
    changes nothing; any other JSON value is stored under the state's name.
    """
    if result is None:
        return context
    if isinstance(result, dict):
        return {**context, **result}
    return {**context, state: result}


def backoff_delay(task: TaskSpec, attempt: int, instance_id: str) -> float:
    """Exponential backoff with up to 25% jitter, deterministic per instance and try."""
    base = min(task.max_backoff, task.backoff * 2 ** (attempt - 1))
    jitter = zlib.crc32(f"{instance_id}:{attempt}".encode()) / 0xFFFFFFFF * 0.25
    return float(base * (1 + jitter))

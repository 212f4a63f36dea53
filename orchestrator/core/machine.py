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

One application is one object in three layers, each a module: the moves an
event ends in, entering a state or running the compensation
(orchestrator.core.step); the table that picks the row (orchestrator.core.table);
and, here, what each kind of event means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.effects import Effect
from orchestrator.core.events import Event
from orchestrator.core.failures import backoff_delay, failure_text, retryable
from orchestrator.core.instance import Instance
from orchestrator.core.spec import LOST_TRIES, TASK_LOST, Definition, TaskSpec
from orchestrator.core.step import Passed
from orchestrator.core.table import GuardFailed, Table

__all__ = [
    "PASSED",
    "GuardFailed",
    "Passed",
    "Result",
    "already_applied",
    "backoff_delay",
    "merge_result",
    "transition",
]

PASSED = "passed"  # the outcome shown for a state passed through (orchestrator.store.instances)


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


class _Step(Table):
    """One event applied: what it means, by its type and the instance's state."""

    # -- dispatch -------------------------------------------------------------

    def run(self) -> None:
        event, inst = self.event, self.inst
        if event.type == ev.STARTED:
            if inst.state is not None:
                self.note = "already started"
                return
            self.inst = inst.evolve(status="running", context=dict(event.data.get("input") or {}))
            self.outcome = "started"
            self._arm_deadline()
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
            case _ if event.type == self.d.deadline_event and "deadline" in event.data:
                self._deadline_passed()
            case _ if event.type in self._current().ignore:
                self.note = f"state {inst.state} ignores {event.type}"
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
        tries = f"try {self.inst.attempt - self.inst.lost} of {state.task.attempts}"
        if self._schedule_retry(state.task):
            return
        error = failure_text(self.event.data)
        self.note = self.note or f"{tries} failed ({error})"
        self.inst = self.inst.evolve(attempt=0, lost=0)
        if self._match(park=False):
            return
        self.inst = self.inst.evolve(
            status="failed",
            halted=True,
            reason=f"state {state.name!r}: task {state.task.path} failed: {error}; "
            f"no transition handles task.failed there",
        )
        self.outcome = "failed"
        self.note = (
            f"{tries} failed ({error}) and nothing handles it: the instance failed "
            "(retry resumes it)"
        )

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
            self.note = (
                f"try {attempt - lost} of {task.attempts} failed with an error not retried "
                f"({failure_text(self.event.data)})"
            )
            return False
        elif attempt - lost >= task.attempts:
            return False
        else:
            what = (
                f"try {attempt - lost} of {task.attempts} failed ({failure_text(self.event.data)})"
            )
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

    # -- answers of compensations, cancel, retry ------------------------------

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
        error = failure_text(self.event.data)
        self.note = self.note or f"compensation of {failed!r} failed ({error})"
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

    def _deadline_passed(self) -> None:
        """The whole instance ran past its deadline: a row on the deadline event decides
        (it may compensate); with none, the instance fails for good, as a Step Functions
        execution past its TimeoutSeconds does. While it compensates, the undoing goes on."""
        if self.inst.status in ("compensating", "failed"):
            self.note = f"deadline passed while {self.inst.status}: that goes on"
            return
        if self._match(park=False):
            self.note = (self.note + "; the deadline passed").lstrip("; ")
            return
        limit = f"{self.d.deadline:g}s" if self.d.deadline else "its deadline"
        self._disarm()
        self.inst = self.inst.evolve(
            status="failed",
            attempt=0,
            halted=False,
            parked=(),
            reason=f"deadline of {limit} passed in state {self.inst.state!r}; no transition "
            f"handles {self.d.deadline_event} there",
        )
        self.outcome = "failed"
        self.note = self.inst.reason or ""

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

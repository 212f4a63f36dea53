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

from dataclasses import dataclass, replace
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.effects import AnswerParent, Effect
from orchestrator.core.events import Event
from orchestrator.core.failures import backoff_delay, failure_text, retryable
from orchestrator.core.instance import PASSED, Fan, Instance
from orchestrator.core.spec import (
    LOST_TRIES,
    TASK_LOST,
    Definition,
    StateSpec,
    TaskSpec,
    split_step,
)
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
    step.answer_parent(instance)
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
            parent = event.data.get("parent")
            self.inst = inst.evolve(
                status="running",
                context=dict(event.data.get("input") or {}),
                parent=parent if isinstance(parent, dict) and "instance" in parent else None,
            )
            self.outcome = "started"
            self._arm_deadline()
            self._enter(self.d.initial)
            self._unpark()
            return
        if inst.state is None:
            self.note = "instance not started"
            return
        if event.type == ev.UNDO:
            self._undo()
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
            case ev.RETRY_DUE if "branch" in event.data:
                self._branch_retry_due()
            case ev.RETRY_DUE:
                self._retry_due()
            case ev.COMPENSATION_COMPLETED | ev.COMPENSATION_FAILED:
                self._compensation_answer()
            case ev.TASK_COMPLETED | ev.TASK_FAILED if inst.status == "compensating":
                self.note = "task answer while compensating"
            case ev.TASK_COMPLETED | ev.TASK_FAILED if split_step(self._answered_step())[1]:
                self._branch_answer()
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

    def _current_try(self, key: tuple[int, int, str]) -> bool:
        """Whether a followed try is the one the running state entry waits for."""
        inst = self.inst
        state, branch = split_step(key[2])
        if inst.status != "running" or state != inst.state or key[0] != inst.entered_seq:
            return False
        if branch is None:
            return key[1] == inst.attempt
        return inst.fan is not None and inst.fan.tries.get(branch, (0, 0))[0] == key[1]

    def _answered_step(self) -> str:
        step = self.event.data.get("state")
        return step if isinstance(step, str) else ""

    def _settle(self, key: tuple[int, int, str]) -> None:
        self.inst = self.inst.evolve(inflight=tuple(t for t in self.inst.inflight if t != key))

    def _late_answer(self) -> bool:
        """An answer of a try in flight of a state that names a compensation, arriving
        after the state was left (or while the instance compensates): a completion is a
        finished step, so its result enters the context and its compensation is pushed;
        a failure (or a try lost with its worker) undid nothing. A compensation run that
        waited for it starts once nothing is left in flight. False: not a late answer."""
        key = self._answered_try()
        if key is None or self._current_try(key):
            return False
        self._settle(key)
        step = key[2]
        state, branch = split_step(step)
        self.outcome = "late"
        if self.event.type == ev.TASK_COMPLETED:
            result = self.event.data.get("result")
            fan = self.inst.fan
            if branch is None:
                context = merge_result(self.inst.context, state, result)
            else:  # a branch's result merges only when its state gathers them
                context = self.inst.context
                if fan is not None and key[0] == self.inst.entered_seq:  # kept for `retry`
                    self.inst = self.inst.evolve(
                        fan=replace(fan, results={**fan.results, branch: result})
                    )
            self.inst = self.inst.evolve(
                context=context, compensations=(*self.inst.compensations, step)
            )
            self.note = f"late completion of {step} (left): its compensation is due"
        else:
            self.note = f"late failure of {step} (left): nothing to undo"
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
        if self._schedule_retry(state.task, self.inst.attempt, self.inst.lost):
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

    def _schedule_retry(
        self, task: TaskSpec, attempt: int, lost: int, branch: str | None = None
    ) -> bool:
        """Arm the next try of a failed one (of the step, or of one branch), if any is left."""
        if self._timer_id(ev.RETRY_DUE, attempt + 1, branch) in self.inst.timers:
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
        if branch is None:
            delay = backoff_delay(task, attempt, self.inst.id)
            self.inst = self.inst.evolve(lost=lost)
            self._arm(self.event.at + delay, ev.RETRY_DUE, {"attempt": attempt + 1})
        else:
            delay = backoff_delay(task, attempt, f"{self.inst.id}/{branch}")
            fan = self.inst.fan
            assert fan is not None
            tries = {**fan.tries, branch: (attempt, lost)}
            self.inst = self.inst.evolve(fan=replace(fan, tries=tries))
            data = {"attempt": attempt + 1, "branch": branch}
            self._arm(self.event.at + delay, ev.RETRY_DUE, data)
            what = f"{branch}: {what}"
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

    # -- branches ---------------------------------------------------------------

    def _branch_answer(self) -> None:
        """A branch's try answered: a completion keeps its result (and pushes its
        compensation); a failure is retried under the branch's own budget, else recorded.
        Then more map items start, or the state answers its table once all settled."""
        step = self._answered_step()
        state, branch = split_step(step)
        assert branch is not None
        fan = self.inst.fan
        attempt = int(self.event.data.get("attempt", 0))
        running = fan.tries.get(branch) if fan is not None else None
        if (
            fan is None
            or running is None
            or running[0] != attempt
            or state != self.inst.state
            or self.inst.status != "running"
        ):
            self.note = f"stale: {step} try {attempt} is not running"
            return
        spec = self._current()
        self._settle((self.inst.entered_seq, attempt, step))
        task = spec.branch_task(branch, "task")
        assert task is not None
        self.outcome = "branch"
        if self.event.type == ev.TASK_COMPLETED:
            stack = self.inst.compensations
            if spec.branch_task(branch, "compensation") is not None:
                stack = (*stack, step)
            tries = {b: t for b, t in fan.tries.items() if b != branch}
            results = {**fan.results, branch: self.event.data.get("result")}
            self.inst = self.inst.evolve(
                fan=replace(fan, tries=tries, results=results), compensations=stack
            )
            self.note = f"{step} completed"
        else:
            if self._schedule_retry(task, attempt, running[1], branch):
                return
            error = failure_text(self.event.data)
            self.note = self.note or f"{step} failed ({error})"
            failure: dict[str, Any] = {
                k: self.event.data[k]
                for k in ("error_type", "error_types", "message")
                if k in self.event.data
            }
            failure["seq"] = self.inst.seq  # which failed first, whatever order they are stored in
            fan = self.inst.fan
            assert fan is not None
            self.inst = self.inst.evolve(
                fan=replace(
                    fan,
                    tries={b: t for b, t in fan.tries.items() if b != branch},
                    failures={**fan.failures, branch: failure},
                )
            )
        self._fan_more()

    def _branch_retry_due(self) -> None:
        branch = str(self.event.data.get("branch"))
        attempt = int(self.event.data.get("attempt", 0))
        fan = self.inst.fan
        running = fan.tries.get(branch) if fan is not None else None
        if running is None or attempt != running[0] + 1 or self.inst.status != "running":
            self.note = f"stale retry of {branch} for try {attempt}"
            return
        self._start_branch(self._current(), branch, attempt)
        self.outcome = "retry"

    def _fan_settled(self) -> None:
        """The branches settled: their results gathered into the context, `task.completed`
        of the state meets the table; or one failed beyond tolerance, and the state's
        `task.failed`, with its error type, does (nothing handling it fails the instance,
        `retry` resumes the branches that did not complete)."""
        state = self._current()
        fan = self.inst.fan
        assert fan is not None
        bound = {"state": state.name, "entered_seq": self.inst.entered_seq}
        if self._fan_failing():
            first, failure = min(fan.failures.items(), key=lambda f: (f[1].get("seq", 0), f[0]))
            failure = {k: v for k, v in failure.items() if k != "seq"}
            data = {
                **bound,
                **failure,
                "message": f"branch {first} failed: {failure.get('message', '')}",
                "failed_branches": sorted(fan.failures),
            }
            self.inst = self.inst.evolve(fan=replace(fan, tries={}))
            self.note = f"state {state.name} failed: {failure_text(data)}"
            if self._answer(ev.TASK_FAILED, data, park=False):
                return
            self.inst = self.inst.evolve(
                status="failed",
                halted=True,
                reason=f"state {state.name!r}: {failure_text(data)}; no transition handles "
                "task.failed there",
            )
            self.outcome = "failed"
            self.note = f"{self.inst.reason} (retry resumes the branches not completed)"
            return
        self.inst = self.inst.evolve(context=gather(self.inst.context, state, fan), fan=None)
        self._answer(ev.TASK_COMPLETED, bound, park=True)

    def _answer(self, event_type: str, data: dict[str, Any], *, park: bool) -> bool:
        """The state's own answer, made of its branches', meets the table as it stands
        (its id derives from the event that settled the last branch)."""
        at = self.event.at
        answer = Event(f"{self.event.id}:{data['state']}", event_type, self.inst.id, at, data)
        self.event = self.moving = answer
        return self._match(park=park)

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
        if self._schedule_retry(self._compensation_spec(), self.inst.attempt, self.inst.lost):
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
            fan=None,
            inflight=(),
            reason=f"deadline of {limit} passed in state {self.inst.state!r}; no transition "
            f"handles {self.d.deadline_event} there",
        )
        self.outcome = "failed"
        self.note = self.inst.reason or ""

    # -- a child and its parent ---------------------------------------------------

    def _undo(self) -> None:
        """The parent compensates past this child: a completed child undoes its finished
        steps, newest first, and ends in its cancel state; its parent hears when it has."""
        inst, binding = self.inst, self.event.data.get("parent")
        mine = inst.parent.get("instance") if inst.parent else None
        if not isinstance(binding, dict) or mine is None or binding.get("instance") != mine:
            self.note = "undo from no parent of this instance"
            return
        self.inst = inst.evolve(parent=binding)
        reason = f"undone: its parent {mine} compensated"
        if inst.status == "completed":
            self.inst = self.inst.evolve(reason=reason)
            self.outcome = "transition"
            if self.inst.compensations:
                self._begin_compensation(self.d.cancel_state, reason)
            else:
                self._enter(self.d.cancel_state)
        elif inst.finished:
            self.note = f"nothing to undo: the instance is {inst.status}"
        else:  # still running: undoing it is cancelling it
            self._cancel()

    def answer_parent(self, before: Instance) -> None:
        """A child that ends (or is undone) answers the parent's step it runs for: the
        answer a task's job would give, so the parent's table routes it like one."""
        inst, parent = self.inst, self.inst.parent
        if parent is None or not inst.finished:
            return
        if before.finished and self.event.type != ev.UNDO:
            return
        data: dict[str, Any] = {
            k: parent[k] for k in ("state", "entered_seq", "attempt") if k in parent
        }
        data["child"] = inst.id
        if parent.get("kind") == "compensation":
            kind = ev.COMPENSATION_COMPLETED
            data["result"] = None
        elif inst.status == "completed":
            kind = ev.TASK_COMPLETED
            output = parent.get("output")
            data["result"] = inst.context.get(output) if isinstance(output, str) else inst.context
        else:
            kind = ev.TASK_FAILED
            error = "ChildCancelled" if inst.status == "cancelled" else "ChildFailed"
            data.update(
                error_type=error,
                error_types=[error, "ChildError"],
                retryable=False,
                message=f"child {inst.workflow} {inst.id} ended {inst.status} in state "
                f"{inst.state}" + (f": {inst.reason}" if inst.reason else ""),
            )
        self.effects.append(AnswerParent(str(parent["instance"]), kind, data))

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
            self._enter(state.name, notify=False, kept=inst.fan)
            self._unpark()  # drops the answers bound to the entry just left
            self.outcome = "retry"
        else:
            self.note = "nothing to retry: no failed task or compensation"


def gather(context: dict[str, Any], state: StateSpec, fan: Fan) -> dict[str, Any]:
    """How a parallel or map state's results enter the context. A parallel state's: each
    branch's by `merge_result`, in declaration order (whatever order they completed in).
    A map's: the completed items' results, in item order, at `results`, and the failed
    (tolerated) items' errors at `<results>_failures`."""
    if state.map is None:
        for branch in state.parallel:
            context = merge_result(context, branch.name, fan.results.get(branch.name))
        return context
    key = state.map.results
    ordered = sorted(fan.results, key=int)
    gathered = {**context, key: [fan.results[i] for i in ordered]}
    if fan.failures:
        gathered[f"{key}_failures"] = [
            {"index": int(i), "error_type": f.get("error_type"), "message": f.get("message")}
            for i, f in sorted(fan.failures.items(), key=lambda kv: int(kv[0]))
        ]
    return gathered


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

"""The pure transition function, driven by hand: no Redis, no clock, no workers.

Instances and events are built here; time only ever arrives on events. Each
test applies events one by one and checks the instance and the effects that
come back. The Hypothesis tests at the end drive the sample workflows with
random event sequences and check the invariants the engine relies on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import ANY, Notify, On, State, Task, Workflow
from orchestrator.core import events as ev
from orchestrator.core.definition import LOST_TRIES, Definition, TaskSpec
from orchestrator.core.effects import CancelTimers, Effect, RunTask, SendNotification, StartTimer
from orchestrator.core.errors import DefinitionError
from orchestrator.core.events import Event
from orchestrator.core.instance import Instance
from orchestrator.core.machine import (
    GuardFailed,
    Passed,
    Result,
    backoff_delay,
    merge_result,
    transition,
)
from tests.sample_workflows import (
    Approval,
    BadCompensation,
    Counter,
    Guarded,
    Retrying,
    Saga,
    big_enough,
    step,
    undo,
)
from workflows.order import OrderFulfilment

IID = "inst-1"
T0 = 1_000.0
STEP = "tests.sample_workflows:step"
UNDO = "tests.sample_workflows:undo"


# ---- workflows only these tests use -----------------------------------------


def recipient(ctx: dict[str, Any]) -> str | None:
    return ctx.get("phone")


class Mixed(Workflow):
    """Compensated and uncompensated steps, then a pause before the end."""

    plain = State(initial=True, task=step)
    undoable = State(task=step, compensation=undo)
    plain_again = State(task=step)
    pause = State()
    end = State(final=True, notify=[Notify("email", "done", to="email")])
    given_up = State(final=True, outcome="failed", notify=[Notify("sms", "x", to=recipient)])
    transitions = [
        On("task.completed", source=plain, target=undoable),
        On("task.completed", source=undoable, target=plain_again),
        On("task.completed", source=plain_again, target=pause),
        On("finish", source=pause, target=end),
        On("give_up", source=pause, target=given_up, compensate=True),
    ]


class Route(Workflow):
    """Two rows on one event: the first whose guard holds fires."""

    start = State(initial=True)
    big = State(final=True)
    small = State(final=True)
    transitions = [
        On("order", source=start, target=big, guard=big_enough),
        On("order", source=start, target=small),
    ]


class Abortable(Workflow):
    """A compensated step, then a pause that can be finished or aborted."""

    working = State(initial=True, task=step, compensation=undo)
    waiting = State()
    done = State(final=True)
    aborted = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=working, target=waiting),
        On("finish", source=waiting, target=done),
        On("abort", source=ANY, target=aborted, compensate=True),
    ]


# ---- building instances and events by hand ----------------------------------


def fresh(workflow: type[Workflow], iid: str = IID) -> Instance:
    d = workflow.definition
    return Instance(id=iid, workflow=d.name, version=d.version, created_at=T0)


def make_event(type_: str, at: float, data: dict[str, Any] | None = None, iid: str = IID) -> Event:
    return Event(f"{type_}@{at}", type_, iid, at, dict(data or {}))


def fire(timer: StartTimer, iid: str = IID) -> Event:
    """The event a timer delivers when it falls due."""
    return make_event(timer.event_type, timer.due, timer.data, iid)


E = TypeVar("E")


def of_type(effects: tuple[Effect, ...], kind: type[E]) -> list[E]:
    return [e for e in effects if isinstance(e, kind)]


class Run:
    """One instance driven event by event; each event comes one second after the last."""

    def __init__(
        self, workflow: type[Workflow], input: dict[str, Any] | None = None, iid: str = IID
    ) -> None:
        self.d: Definition = workflow.definition
        self.at = T0
        self.inst = fresh(workflow, iid)
        self.results: list[Result] = []
        self.apply(make_event(ev.STARTED, self.at, {"input": input or {}}, iid))

    @property
    def last(self) -> Result:
        return self.results[-1]

    def apply(self, event: Event) -> Result:
        result = transition(self.d, self.inst, event)
        self.inst = result.instance
        self.results.append(result)
        return result

    def send(self, type_: str, data: dict[str, Any] | None = None) -> Result:
        self.at += 1
        return self.apply(make_event(type_, self.at, data, self.inst.id))

    def _answer(self) -> dict[str, Any]:
        inst = self.inst
        state = inst.compensations[-1] if inst.status == "compensating" else inst.state
        return {"attempt": inst.attempt, "entered_seq": inst.entered_seq, "state": state}

    def ok(self, result: Any = None) -> Result:
        """The worker reports the try the instance waits for as done."""
        kind = (
            ev.COMPENSATION_COMPLETED if self.inst.status == "compensating" else ev.TASK_COMPLETED
        )
        return self.send(kind, {**self._answer(), "result": result})

    def fail(self, message: str = "boom") -> Result:
        """The worker reports the try the instance waits for as failed."""
        kind = ev.COMPENSATION_FAILED if self.inst.status == "compensating" else ev.TASK_FAILED
        return self.send(kind, {**self._answer(), "error_type": "RuntimeError", "message": message})

    def fire_timer(self, timer: StartTimer) -> Result:
        self.at = max(self.at, timer.due)
        return self.apply(fire(timer, self.inst.id))


def unchanged_but_seq(before: Instance, event: Event) -> Instance:
    """What an ignored event leaves: the count (and the time it was last touched) move on."""
    return before.evolve(seq=before.seq + 1, updated_at=event.at)


# ---- start ------------------------------------------------------------------


def test_start_enters_the_initial_state_and_runs_its_task() -> None:
    # Given a new Saga instance, When it is started with some input
    run = Run(Saga, {"order": 7})
    # Then it stands in the initial state, waiting for try 1 of its task
    r = run.last
    assert r.outcome == "started"
    inst = r.instance
    assert (inst.state, inst.status, inst.seq, inst.entered_seq, inst.attempt) == (
        "one",
        "running",
        1,
        1,
        1,
    )
    assert inst.context == {"order": 7}
    assert inst.updated_at == T0
    assert r.effects == (
        RunTask(
            task=STEP,
            kind="task",
            state="one",
            attempt=1,
            entered_seq=1,
            timeout=300.0,
            context={"order": 7},
        ),
    )


def test_start_arms_the_timeout_of_the_initial_state() -> None:
    # Given Approval, whose initial state expires after 60 s
    run = Run(Approval, {"request_id": "r1", "minimum": 10})
    r = run.last
    # Then one timer is armed for the state's timeout event, bound to this entry
    [timer] = r.effects
    assert isinstance(timer, StartTimer)
    assert timer.due == T0 + 60
    assert timer.event_type == "approval.expired"
    assert timer.data["entered_seq"] == 1
    assert timer.data["state"] == "waiting"
    assert timer.data["timer"] == timer.id
    assert r.instance.timers == (timer.id,)
    assert r.instance.attempt == 0  # no task runs in `waiting`


def test_state_with_task_and_timeout_runs_the_task_and_arms_the_timer() -> None:
    # Given an order whose stock is reserved, When `charging` is entered
    run = Run(OrderFulfilment, {"order_id": "A1"})
    r = run.ok({"reservation": "R-A1"})
    # Then the charge runs and the payment timeout is armed, 3 s after the event
    [task] = of_type(r.effects, RunTask)
    assert (task.task, task.state, task.attempt, task.timeout) == (
        "workflows.order.tasks:charge_payment",
        "charging",
        1,
        60,
    )
    [timer] = of_type(r.effects, StartTimer)
    assert (timer.event_type, timer.due) == ("payment.timeout", run.at + 3.0)


def test_second_start_is_ignored() -> None:
    run = Run(Saga)
    before = run.inst
    r = run.send(ev.STARTED, {"input": {"other": True}})
    assert r.outcome == "ignored"
    assert r.effects == ()
    assert r.instance == unchanged_but_seq(before, make_event(ev.STARTED, run.at))


def test_event_before_start_is_ignored_not_parked() -> None:
    inst = fresh(Approval)
    e = make_event("approve", T0, {"amount": 100})
    r = transition(Approval.definition, inst, e)
    assert r.outcome == "ignored"
    assert r.instance == unchanged_but_seq(inst, e)
    assert r.instance.parked == ()


# ---- task results -----------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"b": 2}, {"a": 1, "b": 2}),
        ({"a": 5}, {"a": 5}),
        ({}, {"a": 1}),
        (None, {"a": 1}),
        (42, {"a": 1, "one": 42}),
        ("text", {"a": 1, "one": "text"}),
        ([1, 2], {"a": 1, "one": [1, 2]}),
        (False, {"a": 1, "one": False}),
        (0, {"a": 1, "one": 0}),
    ],
    ids=["dict-adds", "dict-replaces", "empty-dict", "none", "int", "str", "list", "false", "zero"],
)
def test_merge_result(result: Any, expected: dict[str, Any]) -> None:
    context = {"a": 1}
    assert merge_result(context, "one", result) == expected
    assert context == {"a": 1}  # the old context is never changed in place


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"a": 2, "b": 3}, {"a": 2, "one": "old", "b": 3}),
        (None, {"a": 1, "one": "old"}),
        (42, {"a": 1, "one": 42}),
        ("text", {"a": 1, "one": "text"}),
        ([1, 2], {"a": 1, "one": [1, 2]}),
    ],
    ids=["dict", "none", "int", "str", "list"],
)
def test_task_completed_merges_its_result_and_moves_on(
    result: Any, expected: dict[str, Any]
) -> None:
    # Given a Saga in `one` with some context
    run = Run(Saga, {"a": 1, "one": "old"})
    # When the task of `one` completes with a result
    r = run.ok(result)
    # Then the result enters the context by the merge rule and `two` runs with it
    assert r.outcome == "transition"
    assert r.instance.context == expected
    assert (r.instance.state, r.instance.status, r.instance.entered_seq) == ("two", "running", 2)
    assert r.effects == (
        RunTask(STEP, "task", "two", attempt=1, entered_seq=2, timeout=300.0, context=expected),
    )


def test_compensation_stack_grows_only_for_states_with_a_compensation() -> None:
    # Given Mixed: plain -> undoable (compensated) -> plain_again -> pause
    run = Run(Mixed)
    stacks = [run.ok().instance.compensations for _ in range(3)]
    # Then only `undoable` was pushed
    assert stacks == [(), ("undoable",), ("undoable",)]
    assert run.inst.state == "pause"
    assert run.inst.attempt == 0


def test_entering_a_final_state_clears_the_compensation_stack() -> None:
    # Given a Saga whose three compensated steps are done
    run = Run(Saga)
    for _ in range(3):
        run.ok()
    assert run.inst.compensations == ("one", "two", "three")
    # When the last step completes
    r = run.ok()
    # Then the instance is finished, completed, with nothing left to undo and nothing to run
    assert (r.instance.state, r.instance.status) == ("finished", "completed")
    assert r.instance.compensations == ()
    assert r.instance.finished
    assert r.effects == ()


def test_entering_a_state_sends_its_notifications() -> None:
    run = Run(Mixed, {"email": "a@example.com", "phone": "+1"})
    for _ in range(3):
        run.ok()
    r = run.send("finish")
    assert r.effects == (SendNotification("email", "a@example.com", "done", run.inst.context),)


def test_notification_recipient_from_a_function_of_the_context() -> None:
    run = Run(Mixed, {"phone": "+1"})
    for _ in range(3):
        run.ok()
    r = run.send("give_up")  # compensation first
    assert of_type(r.effects, SendNotification) == []
    r = run.ok()
    assert of_type(r.effects, SendNotification) == [
        SendNotification("sms", "+1", "x", run.inst.context)
    ]


# ---- retries ----------------------------------------------------------------


def test_failed_try_with_retries_left_schedules_a_retry_timer() -> None:
    # Given Retrying: 3 tries, backoff 0.05 s
    run = Run(Retrying)
    # When try 1 fails
    r = run.fail()
    # Then no transition fires: a retry timer is armed for try 2, bound to this entry
    assert r.outcome == "retry"
    assert (r.instance.state, r.instance.status, r.instance.attempt) == ("trying", "running", 1)
    assert of_type(r.effects, RunTask) == []
    [timer] = r.effects
    assert isinstance(timer, StartTimer)
    assert timer.event_type == ev.RETRY_DUE
    assert timer.data["attempt"] == 2
    assert timer.data["entered_seq"] == 1
    assert r.instance.timers == (timer.id,)
    # the wait is the backoff plus at most 25% jitter, counted from the event's time
    assert 0.05 <= timer.due - run.at <= 0.05 * 1.25


def test_retry_due_time_is_deterministic() -> None:
    # Given the same instance failing at the same time, twice
    def due_of_first_retry() -> float:
        run = Run(Retrying)
        [timer] = run.fail().effects
        assert isinstance(timer, StartTimer)
        return timer.due

    # Then the retry is due at exactly the same time
    assert due_of_first_retry() == due_of_first_retry()


@pytest.mark.parametrize(
    ("spec", "attempt", "low", "high"),
    [
        (TaskSpec("m:f", 5, 10, 1.0, 60.0), 1, 1.0, 1.25),
        (TaskSpec("m:f", 5, 10, 1.0, 60.0), 2, 2.0, 2.5),
        (TaskSpec("m:f", 5, 10, 1.0, 60.0), 3, 4.0, 5.0),
        (TaskSpec("m:f", 5, 10, 10.0, 15.0), 3, 15.0, 18.75),  # capped, then jitter
        (TaskSpec("m:f", 5, 10, 0.0, 60.0), 4, 0.0, 0.0),
    ],
)
def test_backoff_delay_is_exponential_capped_and_deterministic(
    spec: TaskSpec, attempt: int, low: float, high: float
) -> None:
    delay = backoff_delay(spec, attempt, IID)
    assert low <= delay <= high
    assert backoff_delay(spec, attempt, IID) == delay


def test_retry_event_runs_the_next_try_in_the_same_entry() -> None:
    run = Run(Retrying)
    [timer] = run.fail().effects
    assert isinstance(timer, StartTimer)
    # When the retry timer fires
    r = run.fire_timer(timer)
    # Then try 2 runs, for the same entry, and the timer is no longer armed
    assert r.outcome == "retry"
    assert r.effects == (
        RunTask(
            "tests.sample_workflows:flaky",
            "task",
            "trying",
            attempt=2,
            entered_seq=1,
            timeout=300.0,
            context={},
        ),
    )
    assert (r.instance.attempt, r.instance.entered_seq, r.instance.timers) == (2, 1, ())


def test_task_failed_transition_fires_only_after_the_last_try() -> None:
    run = Run(Retrying)
    seen: list[tuple[str | None, str, int]] = []
    for _ in range(2):
        [timer] = run.fail().effects
        assert isinstance(timer, StartTimer)
        seen.append((run.inst.state, run.last.outcome, run.inst.attempt))
        run.fire_timer(timer)
    # When try 3 of 3 fails
    r = run.fail()
    # Then, and only then, the workflow's task.failed row fires
    assert seen == [("trying", "retry", 1), ("trying", "retry", 2)]
    assert r.outcome == "transition"
    assert (r.instance.state, r.instance.status) == ("gave_up", "failed")
    assert of_type(r.effects, StartTimer) == []


def test_success_on_a_retry_completes() -> None:
    run = Run(Retrying)
    [timer] = run.fail().effects
    assert isinstance(timer, StartTimer)
    run.fire_timer(timer)
    r = run.ok({"calls": 2})
    assert (r.instance.state, r.instance.status, r.instance.context) == (
        "ok",
        "completed",
        {"calls": 2},
    )


def test_later_successive_retries_wait_longer() -> None:
    run = Run(Retrying)
    delays = []
    for _ in range(2):
        failed_at = run.at + 1
        [timer] = run.fail().effects
        assert isinstance(timer, StartTimer)
        delays.append(timer.due - failed_at)
        run.fire_timer(timer)
    assert 0.05 <= delays[0] <= 0.0625
    assert 0.1 <= delays[1] <= 0.125


# ---- stale events -----------------------------------------------------------


Scenario = Callable[[], tuple[Run, Event]]


def _saga_in_two() -> Run:
    run = Run(Saga)
    run.ok()
    return run


def _retrying_on_try_2() -> Run:
    run = Run(Retrying)
    [timer] = run.fail().effects
    assert isinstance(timer, StartTimer)
    run.fire_timer(timer)
    return run


def _saga_compensating_two() -> Run:
    run = Run(Saga)
    for _ in range(3):
        run.ok()
    run.fail()  # four failed: undo three (entry 5)
    run.ok()  # three undone: undo two (entry 6)
    return run


def _answer(run: Run, type_: str, **data: Any) -> tuple[Run, Event]:
    return run, make_event(type_, run.at + 1, data)


def stale_completion_of_earlier_state() -> tuple[Run, Event]:
    return _answer(_saga_in_two(), ev.TASK_COMPLETED, attempt=1, entered_seq=1, result=1)


def stale_failure_of_earlier_state() -> tuple[Run, Event]:
    return _answer(_saga_in_two(), ev.TASK_FAILED, attempt=1, entered_seq=1)


def stale_completion_of_earlier_try() -> tuple[Run, Event]:
    return _answer(_retrying_on_try_2(), ev.TASK_COMPLETED, attempt=1, entered_seq=1, result=1)


def stale_failure_of_earlier_try() -> tuple[Run, Event]:
    return _answer(_retrying_on_try_2(), ev.TASK_FAILED, attempt=1, entered_seq=1)


def stale_answer_for_try_not_yet_run() -> tuple[Run, Event]:
    return _answer(_retrying_on_try_2(), ev.TASK_COMPLETED, attempt=3, entered_seq=1)


def stale_retry_of_try_already_running() -> tuple[Run, Event]:
    return _answer(_retrying_on_try_2(), ev.RETRY_DUE, attempt=2, entered_seq=1)


def stale_timeout_of_state_left() -> tuple[Run, Event]:
    run = Run(Approval, {"minimum": 1})
    run.send("approve", {"amount": 5})
    assert run.inst.state == "approved"
    return _answer(run, "approval.expired", state="waiting", entered_seq=1)


def stale_task_answer_while_compensating() -> tuple[Run, Event]:
    run = _saga_compensating_two()
    return _answer(
        run, ev.TASK_COMPLETED, attempt=run.inst.attempt, entered_seq=run.inst.entered_seq
    )


def stale_answer_to_earlier_compensation_step() -> tuple[Run, Event]:
    return _answer(
        _saga_compensating_two(), ev.COMPENSATION_COMPLETED, attempt=1, entered_seq=5, result=1
    )


def stale_compensation_answer_while_running() -> tuple[Run, Event]:
    return _answer(_saga_in_two(), ev.COMPENSATION_COMPLETED, attempt=1, entered_seq=2)


STALE: list[Scenario] = [
    stale_completion_of_earlier_state,
    stale_failure_of_earlier_state,
    stale_completion_of_earlier_try,
    stale_failure_of_earlier_try,
    stale_answer_for_try_not_yet_run,
    stale_retry_of_try_already_running,
    stale_timeout_of_state_left,
    stale_task_answer_while_compensating,
    stale_answer_to_earlier_compensation_step,
    stale_compensation_answer_while_running,
]


@pytest.mark.parametrize("scenario", STALE, ids=[f.__name__ for f in STALE])
def test_stale_event_changes_nothing_but_seq(scenario: Scenario) -> None:
    # Given an instance that has moved on
    run, stale = scenario()
    before = run.inst
    # When an event bound to an older entry or try (or the wrong kind of work) arrives
    r = transition(run.d, before, stale)
    # Then it is ignored: no effects, and the instance only counts it
    assert r.outcome == "ignored", r.note
    assert r.effects == ()
    assert r.instance == unchanged_but_seq(before, stale)


def test_stale_scenarios_are_set_up_as_intended() -> None:
    # the "earlier" answers are really earlier than where the instances stand
    assert _saga_in_two().inst.entered_seq == 2
    assert _retrying_on_try_2().inst.attempt == 2
    comp = _saga_compensating_two().inst
    assert (comp.status, comp.compensations, comp.entered_seq) == (
        "compensating",
        ("one", "two"),
        6,
    )


# ---- compensation -----------------------------------------------------------


def test_compensate_transition_undoes_newest_first_one_at_a_time_then_enters_target() -> None:
    # Given a Saga whose steps one, two, three completed
    run = Run(Saga)
    for _ in range(3):
        run.ok()
    # When step four fails (no retries), the task.failed row (compensate=True) fires
    r = run.fail("four broke")
    runs: list[str] = []
    statuses: list[str] = []
    while True:
        tasks = of_type(r.effects, RunTask)
        assert len(tasks) <= 1, "compensations run one at a time"
        if not tasks:
            break
        [task] = tasks
        assert (task.kind, task.task, task.attempt) == ("compensation", UNDO, 1)
        assert task.entered_seq == r.instance.entered_seq == r.instance.seq
        runs.append(task.state)
        statuses.append(r.instance.status)
        assert r.instance.compensating_to == "undone"
        r = run.ok()
    # Then three, two, one were undone, in that order, while `compensating`
    assert runs == ["three", "two", "one"]
    assert statuses == ["compensating"] * 3
    # and afterwards the target is entered, with nothing left on the stack
    assert (r.instance.state, r.instance.status) == ("undone", "failed")
    assert r.instance.compensations == ()
    assert r.instance.compensating_to is None
    assert r.instance.finished


def test_each_state_is_undone_by_its_own_compensation() -> None:
    # Given an order whose stock is reserved and card charged
    run = Run(OrderFulfilment, {"order_id": "A1"})
    run.ok({"reservation": "R-A1"})
    run.ok({"charge": "C-A1"})
    # When shipping fails for good (2 tries)
    [timer] = of_type(run.fail("nowhere").effects, StartTimer)
    run.fire_timer(timer)
    r = run.fail("nowhere")
    # Then the charge is refunded first, by its own task, then the stock released
    undone = [r.effects]
    undone.append(run.ok({"refunded": "yes"}).effects)
    r = run.ok({"released": "R-A1"})
    assert [(t.task, t.state) for effects in undone for t in of_type(effects, RunTask)] == [
        ("workflows.order.tasks:refund_payment", "charging"),
        ("workflows.order.tasks:release_stock", "reserving"),
    ]
    assert (r.instance.state, r.instance.status) == ("failed", "failed")
    assert r.instance.context["released"] == "R-A1"


def test_compensation_stack_shrinks_after_each_undo() -> None:
    run = Run(Saga)
    for _ in range(3):
        run.ok()
    stacks = [run.fail().instance.compensations]
    for _ in range(3):
        stacks.append(run.ok().instance.compensations)
    assert stacks == [("one", "two", "three"), ("one", "two"), ("one",), ()]


def test_compensation_result_is_merged_under_the_compensated_state() -> None:
    run = Run(Saga)
    run.ok()
    run.fail()  # two failed: undo one
    r = run.ok("released")
    assert r.instance.context == {"one": "released"}


def test_failure_with_nothing_to_compensate_enters_the_target_directly() -> None:
    run = Run(Saga)
    r = run.fail()
    assert r.outcome == "transition"
    assert (r.instance.state, r.instance.status) == ("undone", "failed")
    assert r.effects == ()


def test_compensation_failing_after_its_retries_leaves_failed_with_reason_and_stack() -> None:
    # Given BadCompensation: `one` done, `two` fails, the undo of `one` gets 2 tries
    run = Run(BadCompensation)
    run.ok()
    r = run.fail()
    assert r.instance.status == "compensating"
    # When the undo fails once: a retry is scheduled, still compensating
    r = run.fail("cannot undo")
    assert (r.outcome, r.instance.status) == ("retry", "compensating")
    [timer] = r.effects
    assert isinstance(timer, StartTimer)
    r = run.fire_timer(timer)
    [retry] = r.effects
    assert isinstance(retry, RunTask)
    assert (retry.kind, retry.state, retry.attempt) == ("compensation", "one", 2)
    # When it fails again, its last try
    r = run.fail("cannot undo")
    # Then the instance is failed, says which compensation failed and why, and keeps the stack
    inst = r.instance
    assert r.outcome == "failed"
    assert inst.status == "failed"
    assert inst.reason is not None
    assert "'one'" in inst.reason
    assert "RuntimeError: cannot undo" in inst.reason
    assert inst.compensations == ("one",)
    assert r.effects == ()
    # failed, but resumable: it is not finished (documented in instance.py)
    assert not inst.finished


def test_cancel_resumes_a_failed_compensation() -> None:
    run = Run(BadCompensation)
    run.ok()
    run.fail()
    for _ in range(2):
        r = run.fail()
        if timers := of_type(r.effects, StartTimer):
            run.fire_timer(timers[0])
    assert run.inst.status == "failed"
    r = run.send(ev.CANCEL)
    [task] = r.effects
    assert isinstance(task, RunTask)
    assert (task.kind, task.state, task.attempt) == ("compensation", "one", 1)
    assert r.instance.status == "compensating"
    r = run.ok()
    assert (r.instance.state, r.instance.status) == ("cancelled", "cancelled")


def test_table_event_while_compensating_does_not_interrupt_the_compensation() -> None:
    # Given Abortable compensating `working` after an abort
    run = Run(Abortable)
    run.ok()
    r = run.send("abort")
    assert r.instance.status == "compensating"
    before = run.inst
    # When an event with a row from the current state arrives meanwhile
    r = run.send("finish")
    # Then the compensation goes on: same step, same stack, nothing new runs
    assert r.instance.status == "compensating"
    assert r.instance.compensations == before.compensations
    assert r.instance.entered_seq == before.entered_seq
    assert of_type(r.effects, RunTask) == []


def test_second_abort_while_compensating_does_not_run_the_undo_twice() -> None:
    run = Run(Abortable)
    run.ok()
    run.send("abort")
    before = run.inst
    r = run.send("abort")
    assert of_type(r.effects, RunTask) == []
    assert r.instance.entered_seq == before.entered_seq


def test_table_event_after_failed_compensation_leaves_it_failed() -> None:
    class AbortableBadUndo(Workflow):
        working = State(
            initial=True,
            task=step,
            compensation=Task("tests.sample_workflows:undo_fails", retries=0),
        )
        waiting = State()
        done = State(final=True)
        aborted = State(final=True, outcome="failed")
        transitions = [
            On("task.completed", source=working, target=waiting),
            On("finish", source=waiting, target=done),
            On("abort", source=waiting, target=aborted, compensate=True),
        ]

    run = Run(AbortableBadUndo)
    run.ok()
    run.send("abort")
    r = run.fail("cannot undo")
    assert r.instance.status == "failed"
    r = run.send("finish")
    assert r.instance.status == "failed"
    assert r.instance.compensations == ("working",)


# ---- the table: parking and guards ------------------------------------------


def test_unmatched_event_is_parked_then_applied_after_a_later_transition() -> None:
    # Given an Approval waiting for approval (minimum 10)
    run = Run(Approval, {"request_id": "r1", "minimum": 10})
    [timer] = run.last.effects
    assert isinstance(timer, StartTimer)
    # When `pay` arrives before `approve`
    pay = run.send("pay", {"amount": 10})
    # Then it is parked: nothing moves
    assert pay.outcome == "parked"
    assert pay.effects == ()
    assert pay.instance.state == "waiting"
    assert [e.type for e in pay.instance.parked] == ["pay"]
    # When the approval comes
    r = run.send("approve", {"amount": 50})
    # Then approve fires, the parked pay is applied after it, and the instance is paid
    assert r.outcome == "transition"
    assert (r.instance.state, r.instance.status) == ("paid", "completed")
    assert r.instance.parked == ()
    assert "applied parked pay" in r.note
    assert r.effects == (CancelTimers((timer.id,)),)
    assert r.instance.timers == ()


def test_parked_event_waits_through_transitions_that_do_not_enable_it() -> None:
    class Steps(Workflow):
        first = State(initial=True)
        second = State()
        third = State()
        done = State(final=True)
        transitions = [
            On("tick", source=first, target=second),
            On("tick", source=second, target=third),
            On("close", source=third, target=done),
        ]

    run = Run(Steps)
    assert run.send("close").outcome == "parked"
    r = run.send("tick")
    assert (r.instance.state, [e.type for e in r.instance.parked]) == ("second", ["close"])
    r = run.send("tick")
    assert (r.instance.state, r.instance.status, r.instance.parked) == ("done", "completed", ())


def test_event_of_a_type_the_workflow_never_reacts_to_is_recorded_not_parked() -> None:
    run = Run(Counter)
    r = run.send("notification.sent")
    assert (r.outcome, r.instance.parked) == ("ignored", ())
    assert "reacts to notification.sent" in r.note


@pytest.mark.parametrize(
    ("amount", "target"),
    [(100, "big"), (10, "big"), (9.99, "small"), (0, "small")],
)
def test_guard_chooses_between_rows(amount: float, target: str) -> None:
    run = Run(Route, {"minimum": 10})
    r = run.send("order", {"amount": amount})
    assert r.instance.state == target


def test_guard_that_is_false_leaves_the_event_parked() -> None:
    run = Run(Approval, {"minimum": 10})
    r = run.send("approve", {"amount": 5})
    assert (r.outcome, r.instance.state) == ("parked", "waiting")
    assert r.effects == ()


def test_parked_event_is_checked_against_the_guard_again_after_each_transition() -> None:
    # Given a guard on the context, which a task's result later changes
    class Haggle(Workflow):
        waiting = State(initial=True)
        lowering = State(task=step)
        lowered = State()
        accepted = State(final=True)
        transitions = [
            On("offer", source=(waiting, lowered), target=accepted, guard=big_enough),
            On("lower", source=waiting, target=lowering),
            On("task.completed", source=lowering, target=lowered),
        ]

    run = Run(Haggle, {"minimum": 100})
    # When an offer too small is made, it is parked
    assert run.send("offer", {"amount": 50}).outcome == "parked"
    # and stays parked through a transition to a state with no row for it
    r = run.send("lower")
    assert (r.instance.state, [e.type for e in r.instance.parked]) == ("lowering", ["offer"])
    # When the minimum drops below the offer and the workflow moves on
    r = run.ok({"minimum": 40})
    # Then the parked offer is accepted
    assert (r.instance.state, r.instance.status, r.instance.parked) == (
        "accepted",
        "completed",
        (),
    )


def test_guard_that_raises_raises_guard_failed() -> None:
    run = Run(Guarded)
    before = run.inst
    with pytest.raises(GuardFailed, match="guard exploded") as err:
        transition(run.d, before, make_event("go", T0 + 1))
    assert "go" in str(err.value)
    assert "ValueError" in str(err.value)
    assert isinstance(err.value.__cause__, ValueError)


# ---- finished instances, seq, timers ----------------------------------------


def _finished_counter() -> Run:
    run = Run(Counter)
    run.send("finish")
    assert run.inst.finished
    return run


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("tick", {}),
        ("finish", {}),
        (ev.CANCEL, {"reason": "late"}),
        (ev.TASK_COMPLETED, {"attempt": 0, "entered_seq": 2}),
        (ev.STARTED, {"input": {}}),
        ("unknown", {}),
    ],
)
def test_events_after_a_final_state_are_ignored(type_: str, data: dict[str, Any]) -> None:
    run = _finished_counter()
    before = run.inst
    r = run.send(type_, data)
    assert r.outcome == "ignored"
    assert r.effects == ()
    assert r.instance == unchanged_but_seq(before, make_event(type_, run.at))
    assert r.instance.parked == ()


def test_seq_grows_by_exactly_one_per_event_whatever_happens() -> None:
    # Given events that start, park, transition, get ignored, retry and fail
    run = Run(Retrying)
    run.send("noise")  # ignored: no row names it
    run.send(ev.TASK_COMPLETED, {"attempt": 9, "entered_seq": 1})  # stale
    [timer] = run.fail().effects  # retry
    assert isinstance(timer, StartTimer)
    run.fire_timer(timer)  # next try
    run.fire_timer(timer)  # duplicate timer: stale
    run.ok()  # transition to final
    run.send("noise")  # ignored
    # Then seq counted every one of them
    assert [r.instance.seq for r in run.results] == list(range(1, 9))
    assert [r.outcome for r in run.results] == [
        "started",
        "ignored",
        "ignored",
        "retry",
        "retry",
        "ignored",
        "transition",
        "ignored",
    ]


def test_leaving_a_state_cancels_its_timers() -> None:
    run = Run(Approval, {"minimum": 0})
    armed = run.inst.timers
    assert len(armed) == 1
    r = run.send("approve", {"amount": 1})
    assert r.effects == (CancelTimers(armed),)
    assert r.instance.timers == ()


def test_a_timer_that_fired_is_not_cancelled_again() -> None:
    run = Run(Approval, {"minimum": 10})
    [timer] = run.last.effects
    assert isinstance(timer, StartTimer)
    r = run.fire_timer(timer)
    assert (r.instance.state, r.instance.status) == ("expired", "failed")
    assert r.effects == ()
    assert r.instance.timers == ()


def test_starting_compensation_cancels_the_timers_of_the_state() -> None:
    # Given an order charging, with its payment timeout armed and a charge retry pending
    run = Run(OrderFulfilment, {"order_id": "A1"})
    run.ok({"reservation": "R"})
    [timeout] = of_type(run.last.effects, StartTimer)
    [retry] = of_type(run.fail().effects, StartTimer)
    assert run.inst.timers == (timeout.id, retry.id)
    # When the payment times out (a compensate row)
    r = run.fire_timer(timeout)
    # Then the retry is cancelled and the reservation is released
    assert r.instance.status == "compensating"
    assert of_type(r.effects, CancelTimers) == [CancelTimers((retry.id,))]
    [undo_task] = of_type(r.effects, RunTask)
    assert (undo_task.task, undo_task.kind) == (
        "workflows.order.tasks:release_stock",
        "compensation",
    )
    assert r.instance.timers == ()


# ---- cancel -----------------------------------------------------------------


def test_cancel_compensates_then_ends_in_the_built_in_cancelled_state() -> None:
    # Given a Saga with `one` and `two` done, running `three`
    run = Run(Saga)
    run.ok()
    run.ok()
    three = run._answer()
    # When it is cancelled
    r = run.send(ev.CANCEL, {"reason": "customer changed mind"})
    # Then it waits for `three`, still in flight, before undoing anything
    assert (r.instance.status, r.outcome) == ("compensating", "compensating")
    assert of_type(r.effects, RunTask) == []
    assert "waits for three (try 1)" in r.note
    # and when `three` completes after all, it is undone first, then `two`, then `one`
    r = run.send(ev.TASK_COMPLETED, {**three, "result": {"three": "done"}})
    assert r.outcome == "late" and r.instance.context["three"] == "done"
    assert [t.state for t in of_type(r.effects, RunTask)] == ["three"]
    r = run.ok()
    assert [t.state for t in of_type(r.effects, RunTask)] == ["two"]
    r = run.ok()
    assert r.instance.status == "compensating"
    assert [t.state for t in of_type(r.effects, RunTask)] == ["one"]
    r = run.ok()
    assert (r.instance.state, r.instance.status) == ("cancelled", "cancelled")
    assert r.instance.reason == "cancelled: customer changed mind"
    assert r.instance.compensations == () and r.instance.inflight == ()
    assert r.instance.finished
    # and a copy of `three`'s answer arriving later still is ignored
    late = run.send(ev.TASK_COMPLETED, three)
    assert late.outcome == "ignored"


def test_cancel_while_a_try_runs_that_then_fails_undoes_only_the_finished_steps() -> None:
    run = Run(Saga)
    run.ok()
    run.ok()
    three = run._answer()
    run.send(ev.CANCEL)
    # When `three`'s try fails (or is lost with its worker) after the cancel
    r = run.send(ev.TASK_FAILED, {**three, "error_type": "TaskLost", "message": "died"})
    # Then nothing of it is undone: `two`, then `one`
    assert r.outcome == "late" and "nothing to undo" in r.note
    assert [t.state for t in of_type(r.effects, RunTask)] == ["two"]
    run.ok()
    r = run.ok()
    assert r.instance.state == "cancelled"


def test_cancel_with_nothing_to_undo_ends_at_once_and_cancels_timers() -> None:
    run = Run(Approval, {"minimum": 10})
    armed = run.inst.timers
    r = run.send(ev.CANCEL)
    assert (r.instance.state, r.instance.status, r.instance.reason) == (
        "cancelled",
        "cancelled",
        "cancelled",
    )
    assert r.effects == (CancelTimers(armed),)


def test_cancel_while_compensating_changes_only_the_destination() -> None:
    run = Run(Saga)
    for _ in range(3):
        run.ok()
    run.fail()
    before = run.inst
    r = run.send(ev.CANCEL)
    assert r.effects == ()
    assert r.instance.compensating_to == "cancelled"
    assert r.instance.compensations == before.compensations
    for _ in range(3):
        r = run.ok()
    assert (r.instance.state, r.instance.status) == ("cancelled", "cancelled")


def test_cancel_to_a_custom_cancel_state() -> None:
    class Stoppable(Workflow):
        working = State(initial=True, task=step, compensation=undo)
        more = State(task=step)
        done = State(final=True)
        stopped = State(final=True, outcome="cancelled", notify=[Notify("log", "stop", to="who")])
        cancel_state = "stopped"
        transitions = [
            On("task.completed", source=working, target=more),
            On("task.completed", source=more, target=done),
        ]

    run = Run(Stoppable, {"who": "ops"})
    run.ok()
    run.send(ev.CANCEL)
    r = run.ok()
    assert (r.instance.state, r.instance.status) == ("stopped", "cancelled")
    assert of_type(r.effects, SendNotification) == [
        SendNotification("log", "ops", "stop", {"who": "ops"})
    ]


# ---- purity -----------------------------------------------------------------


def test_transition_does_not_change_its_inputs() -> None:
    run = Run(Saga, {"nested": {"list": [1]}})
    inst = run.inst
    snapshot = copy.deepcopy(inst)
    e = make_event(
        ev.TASK_COMPLETED, T0 + 1, {"attempt": 1, "entered_seq": 1, "result": {"nested": 2}}
    )
    e_snapshot = copy.deepcopy(e)
    first = transition(run.d, inst, e)
    second = transition(run.d, inst, e)
    assert inst == snapshot
    assert e == e_snapshot
    assert first == second


# ---- properties over random event sequences ---------------------------------

KINDS = ("ok", "fail", "stale", "timer", "cancel", "external")
EXTERNAL = ("approve", "pay", "tick", "noise")
AMOUNTS = (0, 5, 50, 100)
RESULTS: tuple[Any, ...] = (None, {"k": 1}, 7, "text")
INPUTS: dict[type[Workflow], dict[str, Any]] = {
    Approval: {"request_id": "r1", "minimum": 10},
    OrderFulfilment: {"order_id": "A1", "email": "a@example.com"},
}

# weighted so that runs often get deep (several steps done) before a failure or a cancel
WEIGHTED_KINDS = ("ok",) * 6 + ("fail",) * 2 + ("stale", "timer", "timer", "cancel", "external")
actions_strategy = st.lists(
    st.tuples(st.sampled_from(WEIGHTED_KINDS), st.integers(0, 3), st.integers(0, 3)), max_size=40
)
PROPERTY = settings(max_examples=200, deadline=None, database=None)


@dataclass
class Trace:
    definition: Definition
    start: Instance
    events: list[Event] = field(default_factory=list)
    befores: list[Instance] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    stale: set[int] = field(default_factory=set)  # indexes of events sent as stale
    timers_agree: list[bool] = field(default_factory=list)

    @property
    def final(self) -> Instance:
        return self.results[-1].instance


def drive(
    workflow: type[Workflow],
    actions: list[tuple[str, int, int]],
    *,
    compensations_fail: bool = True,
) -> Trace:
    """Play a simulated world against the machine: workers answer the tasks they are
    given, timers fire when asked, and users send cancels and external events."""
    d = workflow.definition
    trace = Trace(d, fresh(workflow))
    inst = trace.start
    at = T0
    outstanding: RunTask | None = None
    armed: dict[str, StartTimer] = {}

    def apply(event: Event) -> None:
        nonlocal inst, outstanding
        trace.events.append(event)
        trace.befores.append(inst)
        result = transition(d, inst, event)
        trace.results.append(result)
        inst = result.instance
        for effect in result.effects:
            if isinstance(effect, RunTask):
                outstanding = effect
            elif isinstance(effect, StartTimer):
                armed[effect.id] = effect
            elif isinstance(effect, CancelTimers):
                for timer_id in effect.ids:
                    armed.pop(timer_id, None)
        trace.timers_agree.append(set(inst.timers) == set(armed))

    apply(Event("e0", ev.STARTED, IID, at, {"input": INPUTS.get(workflow, {})}))
    for index, (kind, n, m) in enumerate(actions, start=1):
        at += 1.0
        eid = f"e{index}"
        if kind in ("ok", "fail") and outstanding is not None:
            task, outstanding = outstanding, None
            compensation = task.kind == "compensation"
            failing = kind == "fail" and (compensations_fail or not compensation)
            answer = {"state": task.state, "attempt": task.attempt, "entered_seq": task.entered_seq}
            if failing:
                type_ = ev.COMPENSATION_FAILED if compensation else ev.TASK_FAILED
                answer |= {"error_type": "RuntimeError", "message": f"boom {n}"}
            else:
                type_ = ev.COMPENSATION_COMPLETED if compensation else ev.TASK_COMPLETED
                answer["result"] = RESULTS[n]
            apply(Event(eid, type_, IID, at, answer))
        elif kind == "stale":
            type_ = (ev.TASK_COMPLETED, ev.TASK_FAILED, ev.COMPENSATION_COMPLETED, ev.RETRY_DUE)[n]
            data = {
                "attempt": max(inst.attempt, 1) + (m % 2),
                "entered_seq": inst.entered_seq - 1 - m,
            }
            trace.stale.add(len(trace.events))
            apply(Event(eid, type_, IID, at, data))
        elif kind == "timer" and armed:
            timer = sorted(armed.values(), key=lambda t: (t.due, t.id))[n % len(armed)]
            del armed[timer.id]
            at = max(at, timer.due)
            apply(Event(eid, timer.event_type, IID, at, dict(timer.data)))
        elif kind == "cancel":
            apply(Event(eid, ev.CANCEL, IID, at, {"reason": f"r{n}"} if n else {}))
        else:  # external, or nothing else to do
            apply(Event(eid, EXTERNAL[n], IID, at, {"amount": AMOUNTS[m]}))
    return trace


ALL_SAMPLES = [Saga, Approval, Retrying, BadCompensation, OrderFulfilment]
SAMPLE_IDS = [w.__name__ for w in ALL_SAMPLES]


@pytest.mark.parametrize("workflow", ALL_SAMPLES, ids=SAMPLE_IDS)
@PROPERTY
@given(actions=actions_strategy)
def test_property_seq_grows_by_one_per_event(
    workflow: type[Workflow], actions: list[tuple[str, int, int]]
) -> None:
    trace = drive(workflow, actions)
    seqs = [r.instance.seq for r in trace.results]
    assert seqs == list(range(1, len(trace.events) + 1))
    assert all(
        r.instance.updated_at == e.at for r, e in zip(trace.results, trace.events, strict=True)
    )


@pytest.mark.parametrize("workflow", ALL_SAMPLES, ids=SAMPLE_IDS)
@PROPERTY
@given(actions=actions_strategy)
def test_property_nothing_changes_once_finished(
    workflow: type[Workflow], actions: list[tuple[str, int, int]]
) -> None:
    trace = drive(workflow, actions)
    for before, event, result in zip(trace.befores, trace.events, trace.results, strict=True):
        if before.finished:
            assert result.effects == ()
            assert result.outcome == "ignored"
            assert result.instance == unchanged_but_seq(before, event)


@pytest.mark.parametrize("workflow", ALL_SAMPLES, ids=SAMPLE_IDS)
@PROPERTY
@given(actions=actions_strategy)
def test_property_replay_gives_identical_instances_and_effects(
    workflow: type[Workflow], actions: list[tuple[str, int, int]]
) -> None:
    # Given a recorded run, When the same events are applied again from the same start
    trace = drive(workflow, actions)
    inst = trace.start
    replayed: list[Result] = []
    for event, before in zip(trace.events, trace.befores, strict=True):
        snapshot = copy.deepcopy(inst)
        result = transition(trace.definition, inst, event)
        assert inst == snapshot == before  # the input is never changed
        replayed.append(result)
        inst = result.instance
    # Then every instance, effect, outcome and note is the same
    assert replayed == trace.results


@pytest.mark.parametrize("workflow", ALL_SAMPLES, ids=SAMPLE_IDS)
@PROPERTY
@given(actions=actions_strategy)
def test_property_stale_events_change_nothing_but_seq(
    workflow: type[Workflow], actions: list[tuple[str, int, int]]
) -> None:
    trace = drive(workflow, actions)
    for index in trace.stale:
        before, event, result = trace.befores[index], trace.events[index], trace.results[index]
        assert result.outcome == "ignored", result.note
        assert result.effects == ()
        assert result.instance == unchanged_but_seq(before, event)


@pytest.mark.parametrize("workflow", ALL_SAMPLES, ids=SAMPLE_IDS)
@PROPERTY
@given(actions=actions_strategy)
def test_property_instance_timers_are_the_armed_timers(
    workflow: type[Workflow], actions: list[tuple[str, int, int]]
) -> None:
    # the timers an instance records are those its effects armed and neither
    # cancelled nor delivered
    trace = drive(workflow, actions)
    assert all(trace.timers_agree)
    if trace.final.finished:
        assert trace.final.timers == ()


def _saga_completed_steps(trace: Trace) -> list[str]:
    """The compensable steps whose completion the Saga accepted, in order."""
    return [
        step
        for before, event, result in zip(trace.befores, trace.events, trace.results, strict=True)
        if (step := _completed_step(before, event, result)) is not None
    ]


def _completed_step(before: Instance, event: Event, result: Result) -> str | None:
    """The compensable step a task answer completed: of the current state, or late."""
    if event.type != ev.TASK_COMPLETED:
        return None
    if result.outcome == "late":
        return str(event.data["state"])
    if result.outcome == "transition" and before.state in ("one", "two", "three"):
        return before.state
    return None


def _compensations_run(trace: Trace) -> list[str]:
    return [
        effect.state
        for result in trace.results
        for effect in result.effects
        if isinstance(effect, RunTask) and effect.kind == "compensation"
    ]


@PROPERTY
@given(actions=actions_strategy)
def test_property_saga_undoes_every_completed_step_in_reverse(
    actions: list[tuple[str, int, int]],
) -> None:
    # Given any run of Saga in which compensations succeed
    trace = drive(Saga, actions, compensations_fail=False)
    completed = _saga_completed_steps(trace)
    undone = _compensations_run(trace)
    final = trace.final
    # Then compensations run newest first, each once, never more than were completed
    assert undone == completed[::-1][: len(undone)]
    assert all(len(of_type(r.effects, RunTask)) <= 1 for r in trace.results)
    if final.state in ("undone", "cancelled"):
        # a failing (or cancelled) run undid exactly the compensable steps it completed
        assert len(undone) == len(completed)
        assert final.compensations == ()
    if final.state == "finished":
        assert undone == []
        assert completed == ["one", "two", "three"]


@PROPERTY
@given(actions=actions_strategy)
def test_property_saga_stack_is_always_the_oldest_completed_steps(
    actions: list[tuple[str, int, int]],
) -> None:
    # Given any run of Saga, compensations failing too
    trace = drive(Saga, actions)
    completed: list[str] = []
    for before, event, result in zip(trace.befores, trace.events, trace.results, strict=True):
        step = _completed_step(before, event, result)
        if step is not None:
            completed.append(step)
        stack = result.instance.compensations
        # Then the stack holds the oldest completed steps, newest last; undo pops the newest
        assert stack == tuple(completed[: len(stack)])
        if result.instance.finished:
            assert stack == ()
        if result.instance.status == "failed" and not result.instance.finished:
            # a failed compensation keeps its step on the stack and names it
            assert stack
            assert result.instance.reason is not None
            assert repr(stack[-1]) in result.instance.reason


def test_internal_transition_consumes_the_event_without_leaving_the_state() -> None:
    class Pager(Workflow):
        paging = State(
            initial=True,
            notify=[Notify("sms", "page", to="phone")],
            timeout=60,
            timeout_event="unanswered",
        )
        done = State(final=True)
        transitions = [
            On("ping", source=paging, target=paging, internal=True),
            On("unanswered", source=paging, target=done),
        ]

    run = Run(Pager, {"phone": "+1"})
    armed, entered = run.inst.timers, run.inst.entered_seq
    r = run.send("ping")
    assert (r.outcome, r.note, r.effects, r.instance.parked) == ("transition", "internal", (), ())
    assert (r.instance.timers, r.instance.entered_seq) == (armed, entered)


def test_internal_transition_must_stay_where_it_is() -> None:
    with pytest.raises(DefinitionError, match="internal transition on 'ping' must have one source"):

        class Wrong(Workflow):
            a = State(initial=True)
            b = State(final=True)
            transitions = [On("ping", source=a, target=b, internal=True)]


# ---- event data into the context (On(save=...)) ------------------------------


def _payment_workflow(save: Any) -> type[Workflow]:
    class Paid(Workflow):
        name = "paid"
        waiting = State(initial=True)
        done = State(final=True)
        transitions = [On("payment.received", source=waiting, target=done, save=save)]

    return Paid


@pytest.mark.parametrize(
    ("save", "expected"),
    [
        (True, {"order": 1, "amount": 12.5, "currency": "EUR"}),
        ("payment", {"order": 1, "payment": {"amount": 12.5, "currency": "EUR"}}),
        (lambda ctx, data: {"paid": data["amount"] * 2}, {"order": 1, "paid": 25.0}),
    ],
    ids=["merge", "under-a-key", "function"],
)
def test_a_row_saves_the_event_data_into_the_context(save: Any, expected: dict[str, Any]) -> None:
    run = Run(_payment_workflow(save), {"order": 1})
    r = run.send("payment.received", {"amount": 12.5, "currency": "EUR"})
    assert r.instance.state == "done" and r.instance.context == expected


def test_a_parked_event_saves_its_own_data_when_its_row_fires() -> None:
    class Late(Workflow):
        a = State(initial=True)
        b = State()
        done = State(final=True)
        transitions = [
            On("go", source=a, target=b),
            On("payment.received", source=b, target=done, save="payment"),
        ]

    run = Run(Late)
    run.send("payment.received", {"amount": 3})  # early: parked
    r = run.send("go", {"ignored": True})
    assert r.instance.state == "done" and r.instance.context == {"payment": {"amount": 3}}


def test_a_save_function_that_raises_or_returns_no_dict_is_refused_like_a_guard() -> None:
    run = Run(_payment_workflow(lambda ctx, data: data["missing"]))
    with pytest.raises(GuardFailed, match=r"save of transition on payment\.received"):
        run.send("payment.received", {})
    run = Run(_payment_workflow(lambda ctx, data: [1]))
    with pytest.raises(GuardFailed, match="returned list, not a dict"):
        run.send("payment.received", {})


@pytest.mark.parametrize("save", [3, ""], ids=["not-a-save", "empty-key"])
def test_a_malformed_save_fails_at_class_creation(save: Any) -> None:
    with pytest.raises(DefinitionError, match="save"):
        _payment_workflow(save)


# ---- lost tries and the defaults of Task ---------------------------------------


def test_a_lost_try_is_retried_apart_from_the_task_s_own_tries() -> None:
    # Given Saga, whose tasks get one try each (no retries)
    run = Run(Saga)
    # When its worker dies LOST_TRIES times in a row
    for lost in range(1, LOST_TRIES + 1):
        r = run.send(ev.TASK_FAILED, {**run._answer(), "error_type": "TaskLost"})
        assert r.outcome == "retry" and f"{lost} of {LOST_TRIES} lost tries" in r.note
        run.fire_timer(of_type(r.effects, StartTimer)[0])
    # Then each lost try was tried again, and the task's own try still stands
    assert run.inst.attempt == LOST_TRIES + 1 and run.inst.lost == LOST_TRIES
    r = run.ok()
    assert r.instance.state == "two" and r.instance.lost == 0
    # but once the lost budget is spent, a lost try is a failed try like any other
    for _ in range(LOST_TRIES):
        r = run.send(ev.TASK_FAILED, {**run._answer(), "error_type": "TaskLost"})
        run.fire_timer(of_type(r.effects, StartTimer)[0])
    r = run.send(ev.TASK_FAILED, {**run._answer(), "error_type": "TaskLost"})
    assert r.outcome != "retry" and r.instance.status == "compensating"


def test_defaults_of_task_and_compensation() -> None:
    spec = Saga.definition.states["one"]
    assert spec.task is not None and spec.compensation is not None
    assert (spec.task.attempts, spec.task.max_backoff) == (1, 60.0)
    assert (spec.compensation.attempts, spec.compensation.max_backoff) == (21, 300.0)


# ---- states passed through in one step ----------------------------------------


def test_a_state_passed_through_is_in_the_result_with_the_event_that_moved_it_on() -> None:
    class Hop(Workflow):
        a = State(initial=True)
        b = State(notify=[Notify("email", "hello", to="email")], task=step, timeout=5)
        c = State()
        done = State(final=True)
        transitions = [
            On("go", source=a, target=b),
            On("skip", source=b, target=c),
            On("finish", source=c, target=done),
        ]

    run = Run(Hop, {"email": "a@example.com"})
    run.send("skip")  # early: parked
    r = run.send("go")
    # `b` was entered and left at once on the parked `skip`: its notification went out,
    # its task and its timeout did not start
    assert r.instance.state == "c"
    assert r.passed == (Passed("b", "skip", "skip@1001.0"),)
    assert [n.template for n in of_type(r.effects, SendNotification)] == ["hello"]
    assert of_type(r.effects, RunTask) == [] and r.instance.timers == ()

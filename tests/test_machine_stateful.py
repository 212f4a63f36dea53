"""The pure core under a hostile world: a Hypothesis state machine plays RQ, timers and users.

test_machine.py drives the transition function with one answer per task, in
order. Here a simulated world surrounds one instance the way Redis and RQ do:
jobs from RunTask effects answer (or are reported lost) whenever they like,
each answer appended one to three times; timers fire late, twice, or after
they were cancelled; users send events and cancels; the inbox is delivered
in any order and in batches, with the instance stored (to_fields) and loaded
(from_fields) between batches, and with the applier's rules: an event id
applied before is skipped, a guard or schema failure goes to the dead
letters. After every event and every step the invariants the engine relies
on are checked against a model kept beside it; see `World.check`.

The number of sequences per test is HYPOTHESIS_STATEFUL_EXAMPLES (default
200, what CI runs); the chaos harness runs 10,000.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as statistic
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from orchestrator import On, State, Task, Workflow
from orchestrator import events as ev
from orchestrator.effects import CancelTimers, RunTask, StartTimer
from orchestrator.events import Event
from orchestrator.instance import Instance
from orchestrator.machine import GuardFailed, Result, transition
from orchestrator.replay import replay
from orchestrator.schemas import SchemaViolation
from tests.sample_workflows import Approval, Saga, Stuck, step
from workflows.order import OrderFulfilment

IID = "inst-1"
T0 = 1_000.0
ANSWERS = (ev.TASK_COMPLETED, ev.TASK_FAILED, ev.COMPENSATION_COMPLETED, ev.COMPENSATION_FAILED)
EXAMPLES = int(os.environ.get("HYPOTHESIS_STATEFUL_EXAMPLES", "200"))
STATEFUL = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    stateful_step_count=50,
    suppress_health_check=[HealthCheck.too_slow],  # 50 steps each: slow by design
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab", max_size=3),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("ab"), inner),
    max_leaves=4,
)
results = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["k", "amount", "minimum", "order_id"]), json_values),
    json_values,
)
external_data = st.fixed_dictionaries(
    {"amount": st.sampled_from([5, 10, 50.5, 100, "12", "abc", None])},
    optional={"note": st.text("xy", max_size=2)},
)
# a user's event may claim an entry, the current one or one just before: bound, maybe stale
entries_back = st.one_of(st.none(), st.none(), st.integers(0, 2))


def answer_type(task: RunTask, ok: bool) -> str:
    if task.kind == "compensation":
        return ev.COMPENSATION_COMPLETED if ok else ev.COMPENSATION_FAILED
    return ev.TASK_COMPLETED if ok else ev.TASK_FAILED


def binding(data: dict[str, Any]) -> tuple[Any, Any]:
    return data.get("entered_seq"), data.get("attempt")


class World:
    """One instance, its inbox, the RQ jobs and timers it ordered, and a model to check it by.

    `deliver` is the applier: skip ids applied before, dead-letter guard and
    schema failures, apply the rest with `transition`, carry out the effects.
    """

    def __init__(
        self, workflow: type[Workflow], input: dict[str, Any], success: frozenset[str]
    ) -> None:
        d = self.d = workflow.definition
        self.success = success  # final states that may drop the compensation stack unused
        key = d.correlate_by
        self.stored = Instance(
            id=IID,
            workflow=d.name,
            version=d.version,
            created_at=T0,
            updated_at=T0,
            correlation=f"{key}={input[key]}" if key and key in input else None,
        ).to_fields()
        self.now = T0
        self.fresh = itertools.count(1)
        self.inbox: list[str] = []  # event JSON, as the stream holds it
        self.sent: list[str] = []  # every event ever appended
        self.applied: set[str] = set()
        self.history: list[dict[str, Any]] = []
        self.results: list[Result] = []
        self.dead = 0
        self.jobs: dict[str, RunTask] = {}  # enqueued in RQ, not yet run
        self.job_order: list[str] = []  # every job ever enqueued, in order
        self.watched: dict[str, RunTask] = {}  # outstanding for the watchdog
        self.latest: RunTask | None = None  # the work the instance should be waiting for
        self.latest_job = ""
        self.armed: dict[str, StartTimer] = {}  # timers in Redis: armed, not fired, not cancelled
        self.timers: dict[str, StartTimer] = {}  # every timer ever armed
        self.cancelled: set[str] = set()  # cancelled after their commit: they may race
        self.expected_timers: set[str] = set()  # armed by effects - cancelled - delivered
        self.stack: list[str] = []  # compensable steps completed and not yet undone
        self.append(Event(f"start-{IID}", ev.STARTED, IID, T0, {"input": input}))
        self.deliver([0])

    @property
    def instance(self) -> Instance:
        return Instance.from_fields(self.stored)

    # -- the world's moves ----------------------------------------------------

    def append(self, event: Event, copies: int = 1) -> None:
        raw = event.to_json()
        self.inbox += [raw] * copies
        self.sent.append(raw)

    def stamp(self) -> float:
        self.now += 1.0
        return self.now

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.fresh)}"

    def answer(self, job: str, ok: bool, result: Any, copies: int, fresh_ids: bool = False) -> None:
        """The job runs and reports; the report reaches the inbox `copies` times."""
        task = self.jobs.pop(job)
        type_ = answer_type(task, ok)
        data: dict[str, Any] = {
            "task": task.task,
            "state": task.state,
            "attempt": task.attempt,
            "entered_seq": task.entered_seq,
            "job": job,
        }
        if ok:
            data["result"] = result
        else:
            data |= {"error_type": "RuntimeError", "message": f"boom {self.job_order.index(job)}"}
        event = Event(f"{job}-{type_}", type_, IID, self.stamp(), data)
        self.append_copies(event, copies, fresh_ids)

    def append_copies(self, event: Event, copies: int, fresh_ids: bool) -> None:
        if not fresh_ids:
            self.append(event, copies)
            return
        for n in range(copies):  # re-emitted, not redelivered: the applier cannot tell
            self.append(Event(f"{event.id}~{n}" if n else event.id, *_rest(event)))

    def lose(self, job: str) -> None:
        """The watchdog reports the job lost, as orchestrator.watchdog does."""
        task = self.watched.pop(job)
        data = {
            "instance": IID,
            "task": task.task,
            "state": task.state,
            "attempt": task.attempt,
            "entered_seq": task.entered_seq,
            "job": job,
            "error_type": "TaskLost",
            "message": "its worker stopped answering",
        }
        self.append(Event(f"{job}-lost", answer_type(task, False), IID, self.stamp(), data))

    def fire(self, timer_id: str, copies: int, fresh_ids: bool = False) -> None:
        """A timer falls due; its event id (dispatch.timer_event) makes a double firing harmless."""
        self.armed.pop(timer_id, None)
        timer = self.timers[timer_id]
        event = Event(f"timer-{timer_id}", timer.event_type, IID, timer.due, timer.data)
        self.append_copies(event, copies, fresh_ids)

    def again(self, pick: int, fresh_id: bool) -> None:
        """An event sent before comes again: redelivered (same id) or re-emitted (new id)."""
        event = Event.from_json(self.sent[pick % len(self.sent)])
        self.append(Event(self.new_id("again") if fresh_id else event.id, *_rest(event)))

    # -- the applier ------------------------------------------------------------

    def deliver(self, picks: list[int]) -> None:
        """One applier batch: load, apply the picked pending events in that order, store."""
        inst = self.instance
        for pick in picks:
            if not self.inbox:
                break
            event = Event.from_json(self.inbox.pop(pick % len(self.inbox)))
            inst = self.apply(inst, event)
        self.stored = inst.to_fields()

    def apply(self, before: Instance, event: Event) -> Instance:
        if event.id in self.applied:
            return before  # a duplicate emission: the applier skips it
        try:
            self.d.schemas.check(event.type, event.data)
            result = transition(self.d, before, event)
        except (GuardFailed, SchemaViolation):
            self.dead += 1  # dead-lettered: not applied, not counted
            return before
        self.applied.add(event.id)
        after = result.instance
        self.check(before, event, result)
        self.history.append(
            {
                "seq": after.seq,
                "event": json.loads(event.to_json()),
                "to": after.state,
                "status": after.status,
            }
        )
        self.results.append(result)
        return after

    def dispatch(self, result: Result) -> None:
        """The effects, in order, in one MULTI (orchestrator.dispatch)."""
        seq = result.instance.seq
        started: set[str] = set()
        for index, effect in enumerate(result.effects):
            if isinstance(effect, RunTask):
                job = f"{IID}-{seq}-{index}"  # dispatch.job_id
                self.jobs[job] = self.watched[job] = effect
                self.latest, self.latest_job = effect, job
                self.job_order.append(job)
            elif isinstance(effect, StartTimer):
                self.armed[effect.id] = self.timers[effect.id] = effect
                self.expected_timers.add(effect.id)
                started.add(effect.id)
            elif isinstance(effect, CancelTimers):
                for timer_id in effect.ids:
                    self.armed.pop(timer_id, None)
                    self.expected_timers.discard(timer_id)
                    if timer_id not in started:  # armed and cancelled in one MULTI: never fires
                        self.cancelled.add(timer_id)

    # -- the invariants of one applied event ----------------------------------

    def check(self, before: Instance, event: Event, result: Result) -> None:
        after, effects, outcome = result.instance, result.effects, result.outcome
        fired = event.data.get("timer")
        unchanged = before.evolve(
            seq=before.seq + 1,
            updated_at=event.at,
            timers=tuple(t for t in before.timers if t != fired),
        )
        # every applied event counts once, and stamps the time
        assert (after.seq, after.updated_at) == (before.seq + 1, event.at)
        assert after.seq == len(self.history) + 1
        # a finished instance never changes again and orders nothing
        if before.finished:
            assert (outcome, effects) == ("ignored", ())
            assert after == before.evolve(seq=before.seq + 1, updated_at=event.at)
        if outcome == "ignored":
            assert effects == (), result.note
            assert after == unchanged, result.note
        # a timer that was cancelled, should it fire anyway, is stale (orchestrator.timers)
        if fired in self.cancelled:
            assert (outcome, after) == ("ignored", unchanged), result.note
        # an answer is taken only from the work the instance waits for: the latest RunTask
        if event.type in ANSWERS and outcome != "ignored":
            latest = self.latest
            assert latest is not None
            assert event.type in (answer_type(latest, True), answer_type(latest, False))
            assert binding(event.data) == (latest.entered_seq, latest.attempt)
            assert event.data.get("job", self.latest_job) == self.latest_job
            assert event.data.get("state", latest.state) == latest.state
        self.check_compensation(before, event, result)
        self.expected_timers.discard(fired)
        self.dispatch(result)
        # the instance's timers are those its effects armed, minus cancelled, minus delivered
        assert set(after.timers) == self.expected_timers
        if after.finished:  # and nothing is left behind: no stack, no parked event, no timer
            assert (after.compensations, after.parked, after.timers) == ((), (), ())
            assert not self.armed
        if after.status == "running":  # parked events bound to an entry left were dropped
            for parked in after.parked:
                assert parked.entered_seq in (None, after.entered_seq), parked
        assert not {p.type for p in after.parked} & ev.ENGINE_TYPES  # those are never parked

    def check_compensation(self, before: Instance, event: Event, result: Result) -> None:
        """Completed steps with a compensation are undone once each, newest first."""
        after, accepted = result.instance, result.outcome != "ignored"
        if event.type == ev.TASK_COMPLETED and accepted:
            assert before.state is not None
            if self.d.states[before.state].compensation is not None:
                self.stack.append(before.state)
        if event.type == ev.COMPENSATION_COMPLETED and accepted:
            assert before.status == "compensating"
            assert self.latest is not None and self.stack, "undo with nothing done"
            undone = self.stack.pop()
            assert undone == self.latest.state == event.data.get("state", undone)
        runs = [e for e in result.effects if isinstance(e, RunTask)]
        for task in runs:  # each state's work is its own task, each undo its own compensation
            spec = self.d.states[task.state]
            assert task.task == getattr(spec, task.kind).path
            # and is work the instance then waits for: none is ordered and abandoned at once
            awaited = after.compensations[-1] if after.status == "compensating" else after.state
            assert (task.kind == "compensation") == (after.status == "compensating")
            assert (task.state, task.entered_seq, task.attempt) == (
                awaited,
                after.entered_seq,
                after.attempt,
            ), task
        for task in (t for t in runs if t.kind == "compensation"):
            assert after.status == "compensating"
            assert self.stack and task.state == self.stack[-1], (task, self.stack)
        if after.finished:
            if after.state not in self.success:
                assert self.stack == [], f"ended {after.state} with {self.stack} never undone"
            self.stack.clear()
        else:
            assert after.compensations == tuple(self.stack)

    # -- the invariants of the stored instance --------------------------------

    def check_stored(self) -> None:
        inst = self.instance
        assert inst.seq == len(self.history) == len(self.applied)
        report = replay(self.d, inst, self.history)
        assert report.matches, report.summary()
        assert report.rebuilt.to_fields() == self.stored
        # every timer the instance knows is armed in Redis or on its way in the inbox
        pending = {Event.from_json(raw).data.get("timer") for raw in self.inbox}
        assert set(inst.timers) <= set(self.armed) | pending
        # and every timer armed in Redis is one it knows, so leaving the entry cancels it
        assert set(self.armed) <= set(inst.timers)


def _rest(event: Event) -> tuple[str, str, float, dict[str, Any]]:
    return event.type, event.instance_id, event.at, event.data


# ---- the state machine --------------------------------------------------------


class WorldMachine(RuleBasedStateMachine):
    workflow: ClassVar[type[Workflow]]
    input: ClassVar[dict[str, Any]] = {}
    success: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.world = World(self.workflow, dict(self.input), self.success)

    @property
    def finished(self) -> bool:
        return self.world.instance.finished

    @precondition(lambda self: bool(self.world.jobs))
    @rule(
        pick=st.integers(0, 20),
        ok=st.sampled_from([True, True, True, False]),
        result=results,
        copies=st.integers(1, 3),
    )
    def job_answers(self, pick: int, ok: bool, result: Any, copies: int) -> None:
        jobs = sorted(self.world.jobs)
        self.world.answer(jobs[pick % len(jobs)], ok, result, copies)

    @precondition(lambda self: bool(self.world.jobs))
    @rule(
        ok=st.sampled_from([True, True, True, False]),
        result=results,
        copies=st.integers(1, 3),
        picks=st.lists(st.integers(0, 50), max_size=4),
    )
    def job_answers_and_applier_catches_up(
        self, ok: bool, result: Any, copies: int, picks: list[int]
    ) -> None:
        """The common case, so that runs get deep: the newest job answers, all is applied."""
        self.world.answer(max(self.world.jobs, key=self.world.job_order.index), ok, result, copies)
        self.world.deliver(picks + [0] * len(self.world.inbox))

    @precondition(lambda self: bool(self.world.watched))
    @rule(pick=st.integers(0, 20))
    def job_reported_lost(self, pick: int) -> None:
        # the worker may be a zombie that still answers later: its job stays in RQ
        jobs = sorted(self.world.watched)
        self.world.lose(jobs[pick % len(jobs)])

    @precondition(lambda self: bool(self.world.inbox))
    @rule(picks=st.lists(st.integers(0, 50), min_size=1, max_size=4))
    def applier_takes_a_batch(self, picks: list[int]) -> None:
        self.world.deliver(picks)

    @precondition(lambda self: bool(self.world.armed))
    @rule(pick=st.integers(0, 20), copies=st.integers(1, 2))
    def timer_fires(self, pick: int, copies: int) -> None:
        armed = sorted(self.world.armed)
        self.world.fire(armed[pick % len(armed)], copies)

    @precondition(lambda self: bool(self.world.cancelled))
    @rule(pick=st.integers(0, 20), copies=st.integers(1, 2))
    def cancelled_timer_fires_anyway(self, pick: int, copies: int) -> None:
        cancelled = sorted(self.world.cancelled)
        self.world.fire(cancelled[pick % len(cancelled)], copies)

    @rule(
        type_index=st.integers(0, 20),
        data=external_data,
        back=entries_back,
        applied_now=st.booleans(),
    )
    def user_emits(
        self, type_index: int, data: dict[str, Any], back: int | None, applied_now: bool
    ) -> None:
        types = sorted(self.world.d.event_types - {ev.TASK_COMPLETED, ev.TASK_FAILED})
        types.append(ev.NOTIFICATION_SENT)  # a notification's report, late as they are
        type_ = types[type_index % len(types)]
        if back is not None:
            data = {**data, "entered_seq": self.world.instance.entered_seq - back}
        self.world.append(Event(self.world.new_id("x"), type_, IID, self.world.stamp(), data))
        if applied_now:
            self.world.deliver([len(self.world.inbox) - 1])

    def task_stuck(self) -> bool:
        """What the client asks before it binds an answer by hand or resumes a task."""
        inst = self.world.instance
        return inst.status == "running" and self.world.d.states[inst.state or ""].task is not None

    @precondition(lambda self: self.task_stuck() and self.world.instance.attempt > 0)
    @rule(ok=st.booleans(), result=results)
    def operator_answers_the_task(self, ok: bool, result: Any) -> None:
        """`orchestrator emit task.completed --task ...`: bound to the try the store shows."""
        inst = self.world.instance
        state = self.world.d.states[inst.state or ""]
        assert state.task is not None
        type_ = ev.TASK_COMPLETED if ok else ev.TASK_FAILED
        data: dict[str, Any] = {
            "task": state.task.path,
            "state": state.name,
            "entered_seq": inst.entered_seq,
            "attempt": inst.attempt,
        }
        data |= {"result": result} if ok else {"error_type": "External", "message": "by hand"}
        self.world.append(Event(self.world.new_id("op"), type_, IID, self.world.stamp(), data))

    @precondition(lambda self: not self.finished)  # the client refuses to cancel a finished one
    @rule(reason=st.sampled_from([None, "changed mind"]))
    def user_cancels(self, reason: str | None) -> None:
        data = {"reason": reason} if reason else {}
        self.world.append(Event(self.world.new_id("c"), ev.CANCEL, IID, self.world.stamp(), data))

    @precondition(
        lambda self: (
            (self.task_stuck() and self.world.instance.attempt == 0)
            or (self.world.instance.status == "failed" and not self.finished)
        )
    )
    @rule()
    def operator_retries(self) -> None:
        self.world.append(Event(self.world.new_id("r"), ev.RESUME, IID, self.world.stamp(), {}))

    @precondition(lambda self: bool(self.world.sent))
    @rule(pick=st.integers(0, 200), fresh=st.booleans())
    def old_event_again(self, pick: int, fresh: bool) -> None:
        """An event sent before comes again: redelivered (same id) or re-emitted (new id)."""
        self.world.again(pick, fresh)

    @precondition(lambda self: self.finished and bool(self.world.sent))
    @rule(pick=st.integers(0, 200), fresh=st.booleans())
    def late_event_after_the_end(self, pick: int, fresh: bool) -> None:
        self.world.again(pick, fresh)
        self.world.deliver([len(self.world.inbox) - 1])

    @invariant()
    def stored_instance_is_its_history(self) -> None:
        self.world.check_stored()

    def teardown(self) -> None:
        inst = self.world.instance
        statistic(f"ended {inst.status} in {inst.state}")


class SagaWorld(WorldMachine):
    workflow = Saga
    success = frozenset({"finished"})


class ApprovalWorld(WorldMachine):
    workflow = Approval
    input: ClassVar[dict[str, Any]] = {"request_id": "r1", "minimum": 10}


class OrderWorld(WorldMachine):
    workflow = OrderFulfilment
    input: ClassVar[dict[str, Any]] = {"order_id": "A1", "email": "a@example.com", "phone": "+1"}
    success = frozenset({"shipped"})


class Hasty(Workflow):
    """Two states with tasks entered in one step: `skip` waits parked until `first` is entered."""

    waiting = State(initial=True)
    first = State(task=step)
    second = State(task=Task("tests.sample_workflows:flaky"))
    done = State(final=True)
    transitions = [
        On("go", source=waiting, target=first),
        On("skip", source=first, target=second),
        On("task.completed", source=[first, second], target=done),
    ]


class HastyWorld(WorldMachine):
    workflow = Hasty
    success = frozenset({"done"})


class StuckWorld(WorldMachine):
    workflow = Stuck
    success = frozenset({"done"})


MACHINES = [SagaWorld, ApprovalWorld, OrderWorld, HastyWorld, StuckWorld]


@pytest.mark.parametrize("machine", MACHINES, ids=[m.workflow.__name__ for m in MACHINES])
def test_instance_survives_a_hostile_world(machine: type[WorldMachine]) -> None:
    run_state_machine_as_test(machine, settings=STATEFUL)


# ---- convergence: faults do not change where an instance ends -----------------


@dataclass(frozen=True)
class Script:
    """What the world will say: the outcome of the n-th job, and users' events in order."""

    outcomes: tuple[tuple[bool, Any], ...] = ()
    externals: tuple[tuple[str, dict[str, Any]], ...] = ()

    def outcome(self, n: int) -> tuple[bool, Any]:
        return self.outcomes[n] if n < len(self.outcomes) else (True, None)


Chooser = Callable[[int], int]  # how many choices -> which one
LATE = frozenset(ANSWERS) | {ev.RETRY_DUE, "payment.timeout", "approval.expired"}


def play(
    machine: type[WorldMachine], script: Script, choose: Chooser | None, fresh_ids: bool
) -> World:
    """Run a script to its end. With no chooser: in order, each answer once, no faults.

    With one: answers come 1 to 3 times, timers fire twice, cancelled timers fire
    anyway, old events come again, the applier picks any pending event, and at
    the end every answer and timer event is delivered once more, late.
    """
    world = World(machine.workflow, dict(machine.input), machine.success)
    for type_, data in script.externals:
        world.append(Event(world.new_id("x"), type_, IID, world.stamp(), data))
    faults = 0 if choose is None else 12  # how many stale or repeated events to add

    def retry_timers() -> list[str]:
        return sorted(t for t, s in world.armed.items() if s.event_type == ev.RETRY_DUE)

    while True:
        moves: list[str] = []
        moves += ["deliver"] if world.inbox else []
        moves += ["answer"] if world.jobs else []
        moves += ["retry"] if retry_timers() else []
        if faults:
            moves += ["stale"] if world.cancelled else []
            moves += ["again"] if world.sent else []
        if not moves:
            break
        move = moves[0] if choose is None else moves[choose(len(moves))]
        copies = 1 if choose is None else 1 + choose(3)
        if move == "deliver":  # in order, or any pending event
            world.deliver([0 if choose is None else choose(len(world.inbox))])
        elif move == "answer":
            job = min(world.jobs, key=world.job_order.index)
            ok, result = script.outcome(world.job_order.index(job))
            world.answer(job, ok, result, copies, fresh_ids)
        elif move == "retry":
            world.fire(retry_timers()[0], min(copies, 2), fresh_ids)
        elif move == "stale":
            assert choose is not None
            faults -= 1
            cancelled = sorted(world.cancelled)
            world.fire(cancelled[choose(len(cancelled))], 1, fresh_ids)
        else:
            assert choose is not None
            faults -= 1
            world.again(choose(len(world.sent)), fresh_ids)
    if choose is not None:  # and when all is over, every answer and timer comes once more
        late = [i for i, raw in enumerate(world.sent) if Event.from_json(raw).type in LATE]
        for index in late:
            world.again(index, fresh_ids)
        world.deliver([choose(len(world.inbox) - n) for n in range(len(world.inbox))])
    world.check_stored()
    return world


def outcome_of(world: World) -> dict[str, Any]:
    inst = world.instance
    ran = [
        (e.task, e.kind, e.state, e.attempt)
        for r in world.results
        for e in r.effects
        if isinstance(e, RunTask)
    ]
    return {
        "state": inst.state,
        "status": inst.status,
        "context": inst.context,
        "compensations": inst.compensations,
        "compensating_to": inst.compensating_to,
        "reason": inst.reason,
        "jobs run": ran,
    }


outcomes = st.lists(st.tuples(st.sampled_from([True, True, False]), results), max_size=10)
approval_events = st.lists(
    st.one_of(
        st.tuples(st.just("approve"), st.fixed_dictionaries({"amount": st.sampled_from([5, 50])})),
        st.tuples(st.just("pay"), st.just({})),
    ),
    max_size=5,
)
scripts = st.one_of(
    st.tuples(st.sampled_from([SagaWorld, OrderWorld]), outcomes.map(lambda o: Script(tuple(o)))),
    st.tuples(st.just(ApprovalWorld), approval_events.map(lambda e: Script(externals=tuple(e)))),
)


@settings(STATEFUL, max_examples=EXAMPLES)
@given(case=scripts, fresh_ids=st.booleans(), data=st.data())
def test_faults_end_where_the_fault_free_run_ends(
    case: tuple[type[WorldMachine], Script], fresh_ids: bool, data: st.DataObject
) -> None:
    # Given a script of task outcomes (or of users' events), and its fault-free run
    machine, script = case
    reference = play(machine, script, None, fresh_ids=False)

    def choose(n: int) -> int:
        return data.draw(st.integers(0, n - 1)) if n > 1 else 0

    # When the same script is played with answers repeated, reordered and late
    # (re-emitted under new ids too, so that only the machine can tell them apart)
    faulty = play(machine, script, choose, fresh_ids)
    # Then the instance ends in the same place, with the same context, having run the same jobs
    assert outcome_of(faulty) == outcome_of(reference)
    statistic(f"{machine.workflow.__name__} ended {reference.instance.status}")


# ---- what the state machine found: the smallest cases, kept as regression tests ------
#
# Each broke an invariant of `World.check` before the fix in orchestrator/machine.py.

ORDER_INPUT = dict(OrderWorld.input)


def test_a_step_orders_no_task_it_abandons_in_the_same_step() -> None:
    # Given an order with a payment.timeout that came early, parked while stock is reserved
    world = World(OrderFulfilment, ORDER_INPUT, OrderWorld.success)
    world.append(Event("early", "payment.timeout", IID, world.stamp(), {}))
    world.deliver([0])
    assert world.instance.parked
    # When the reservation completes: `charging` is entered and the parked timeout fires there
    [reserve] = world.jobs
    world.answer(reserve, True, None, 1)
    world.deliver([0])
    result = world.results[-1]
    assert result.instance.status == "compensating"
    # Then the stock is released, and no charge is ordered that nobody waits for (before the
    # fix the charge job was enqueued too: it charged the card, its answer was ignored while
    # compensating, and no refund ever followed)
    ordered = [(t.kind, t.state) for t in result.effects if isinstance(t, RunTask)]
    assert ordered == [("compensation", "reserving")]


def test_a_task_abandoned_in_the_same_step_is_never_ordered() -> None:
    # Given Hasty with `skip` parked; `go` enters `first`, and `skip` moves on to `second` at once
    world = World(Hasty, {}, frozenset({"done"}))
    for type_ in ("skip", "go"):
        world.append(Event(type_, type_, IID, world.stamp(), {}))
    world.deliver([0, 0])
    assert world.instance.state == "second"
    # Then only `second`'s task was ordered: `first` was left before it could start, so no
    # job runs for it, and no answer of it could be mistaken for `second`'s (same entry seq)
    assert sorted(task.state for task in world.jobs.values()) == ["second"]


def test_a_second_failure_report_leaves_no_timer_the_instance_forgot() -> None:
    # Given an order whose first reservation try the watchdog reported lost: a retry is armed
    world = World(OrderFulfilment, ORDER_INPUT, OrderWorld.success)
    [job] = world.jobs
    world.lose(job)
    world.deliver([0])
    [retry] = world.armed
    # When the zombie worker reports the same try failed, and the retry timer fires meanwhile
    world.answer(job, False, None, 1)
    world.fire(retry, 1)
    world.deliver([0, 0])  # the second failure (arms the retry again), then the retry
    # Then every timer armed in Redis is one the instance knows, and would cancel on leaving
    # (before the fix the second report armed the retry again: it stayed armed, unknown to
    # the instance, and was skipped only because its event id had been applied already)
    assert set(world.armed) <= set(world.instance.timers)


def test_resuming_a_stuck_task_leaves_no_stale_answer_parked() -> None:
    # Given Stuck, whose task failed with no row for the failure: the instance failed,
    # with a reason naming the state, the task and the error, and nothing parked
    world = World(Stuck, {}, frozenset({"done"}))
    [job] = world.jobs
    world.answer(job, False, None, 1)
    world.deliver([0])
    assert (world.instance.status, world.instance.halted) == ("failed", True)
    assert not world.instance.finished and world.instance.parked == ()
    reason = world.instance.reason or ""
    assert "state 'working'" in reason and "failed" in reason
    # When the operator retries it: the state is entered again and the task runs anew
    resume = Event("retry", ev.RESUME, IID, world.stamp(), {})
    inst = transition(world.d, world.instance, resume).instance
    assert (inst.status, inst.attempt) == ("running", 1)
    # Then the old failure, bound to the entry left, is no longer parked
    assert [p.entered_seq for p in inst.parked if p.entered_seq != inst.entered_seq] == []

"""The pure core under a hostile world: a Hypothesis state machine plays RQ, timers and users.

test_machine.py drives the transition function with one answer per task, in
order. Here a simulated world surrounds one instance the way Redis and RQ do:
jobs from RunTask effects answer (or are reported lost) whenever they like,
each answer appended one to three times; timers fire late, twice, or after
they were cancelled; users send events and cancels; the inbox is delivered
in any order and in batches, with the instance stored (to_fields) and loaded
(from_fields) between batches, and with the applier's rules: an event id
applied before is skipped, a guard or schema failure goes to the dead
letters. A failure reports its type the way orchestrator.core.failures does
(retried, routed by `error=`, non-retryable), and a job may answer long after
its state was left (a `skip`, a cancel, a timeout that compensates). After
every event and every step the invariants the engine relies on are checked
against a model kept beside it (see `World.check`), the saga rules of #12
among them. A step is a state's task in one entry of it, or one branch of a
parallel state or one item of a map (#15), "state/branch", with tries of its own:

- every step whose task completed, on time or late, that names a compensation,
  is undone exactly once, newest first by completion, and no other step is; an
  undo is never ordered while a compensable try is in flight, and a compensation
  run that waits always has a try to wait for;
- `Instance.inflight` is exactly the compensable tries ordered and not yet
  answered or lost; the answer of one of them is never dropped, and is `late`
  when its state was left;
- no step is tried more than its attempts + LOST_TRIES times; a lost try is
  retried apart from the attempts while LOST_TRIES last; a non-retryable
  failure is never followed by another try; a task failure is retried, routed
  or halts the instance (failed, halted) exactly as the model predicts, and
  only such a failure halts it; `workflow.retry` resumes it;
- a row's `save` puts the firing event's data into the context;
- the branches of a state entry (`Fanned`) are started once each, a map's items in
  order and never more than `max_concurrency` of them unsettled at once (nor fewer,
  while items wait and the map is not failing); a branch answer is taken only from
  its current try; the state answers its table exactly when the model says its
  branches settled (a failure fails fast, or waits for all), its context then
  gathering the results in declaration or item order, its failure routed by the
  first failed branch's error type or halting the instance; `workflow.retry` runs
  again exactly the branches that did not complete, and a branch completing late in
  the entry the instance still stands in (halted) is one of those kept;
- the stored instance is what replaying its history gives.

The number of sequences per test is HYPOTHESIS_STATEFUL_EXAMPLES (default
120, what CI runs: the suite must stay under its time); the chaos harness runs 10,000.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as statistic
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from orchestrator import Map, On, State, Task, Workflow
from orchestrator.core import events as ev
from orchestrator.core.definition import LOST_TRIES, TASK_LOST, StateSpec, TaskSpec, TransitionSpec
from orchestrator.core.effects import CancelTimers, RunTask, StartTimer
from orchestrator.core.errors import SchemaViolation
from orchestrator.core.events import Event
from orchestrator.core.instance import Instance
from orchestrator.core.machine import PASSED, GuardFailed, Result, transition
from orchestrator.core.replay import replay
from orchestrator.core.spec import split_step, step_name
from orchestrator.runtime.schemas import PayloadSchemas
from tests.sample_workflows import Approval, Saga, Stuck, step
from tests.stateful_workflows import Batch, Checkout, Declined, Ledger, Sweep, double, log_note
from workflows.order import OrderFulfilment

IID = "inst-1"
T0 = 1_000.0
ANSWERS = (ev.TASK_COMPLETED, ev.TASK_FAILED, ev.COMPENSATION_COMPLETED, ev.COMPENSATION_FAILED)
EXAMPLES = int(os.environ.get("HYPOTHESIS_STATEFUL_EXAMPLES", "120"))
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
# how a try fails, as orchestrator.core.failures reports it: retried, routed by type (Declined and
# Refused are non_retryable in some of Ledger's tasks; Refused is a LedgerError), never retried
FAILURES: tuple[dict[str, Any], ...] = (
    {"error_type": "RuntimeError", "error_types": ["RuntimeError"]},
    {"error_type": "Declined", "error_types": ["Declined"]},
    {"error_type": "Refused", "error_types": ["Refused", "LedgerError"]},
    {"error_type": "Fatal", "error_types": ["Fatal", "NonRetryable"], "retryable": False},
)
failures = st.sampled_from(FAILURES)


def tally(value: str) -> None:
    """A statistic of the run (--hypothesis-show-statistics); none outside a Hypothesis test."""
    with contextlib.suppress(InvalidArgument):
        statistic(value)


def answer_type(task: RunTask, ok: bool) -> str:
    if task.kind == "compensation":
        return ev.COMPENSATION_COMPLETED if ok else ev.COMPENSATION_FAILED
    return ev.TASK_COMPLETED if ok else ev.TASK_FAILED


def binding(data: dict[str, Any]) -> tuple[Any, Any]:
    return data.get("entered_seq"), data.get("attempt")


Try = tuple[int, int, str]  # (entered_seq, attempt, state), as Instance.inflight holds a try


def try_of(data: dict[str, Any]) -> Try | None:
    """The try a task answer names, if it names one."""
    try:
        return int(data["entered_seq"]), int(data["attempt"]), str(data["state"])
    except (KeyError, TypeError, ValueError):
        return None


def reported_types(data: dict[str, Any]) -> set[str]:
    """The error types a failure reports (the model's own reading of orchestrator.core.failures)."""
    names = data.get("error_types")
    if isinstance(names, list) and names:
        return {n for n in names if isinstance(n, str)}
    return {data["error_type"]} if isinstance(data.get("error_type"), str) else set()


@dataclass
class Step:
    """The model of one step: a state's task (or one branch's) in one entry of it, or one
    compensation run."""

    spec: TaskSpec
    tries: int = 0  # tries ordered
    lost: int = 0  # failures taken as a try lost with its worker, within LOST_TRIES
    failed: int = 0  # failures counted against the task's attempts
    failed_tries: set[int] = field(default_factory=set)  # tries whose failure was taken
    closed: str = ""  # why no other try may follow: a completion, a non-retryable failure


@dataclass
class Fanned:
    """The model of one entry of a parallel or map state: its branches (a parallel state's
    names, a map's item indexes), those with a try ordered and not settled, those that
    completed (kept from the entry `retry` resumed, or here, on time or late) with their
    results, and those that failed for good, in the order they did."""

    spec: StateSpec
    branches: tuple[str, ...]
    kept: frozenset[str]  # completed in the entry `retry` resumed: not run again
    results: dict[str, Any]
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    open: set[str] = field(default_factory=set)  # started, neither completed nor failed
    started: set[str] = field(default_factory=set)  # a first try ordered in this entry
    settled: bool = False  # the state answered its table

    def failing(self) -> bool:
        """Failed beyond what the state tolerates: a parallel state, any branch; a map,
        more items than `tolerated_failures` (the only tolerance the model reads)."""
        spec = self.spec.map
        if spec is None:
            return bool(self.failures)
        assert spec.tolerated_percentage is None, "the model reads a count of failures"
        return len(self.failures) > (spec.tolerated or 0)

    def settles(self) -> bool:
        """Whether the state answers now: failing, at once (fail_fast) or once nothing runs
        (wait_all); otherwise once every branch completed or failed (tolerated)."""
        if self.failing():
            return self.spec.on_failure == "fail_fast" or not self.open
        return all(b in self.results or b in self.failures for b in self.branches)

    def next_item(self) -> str | None:
        """The map item to start next: the first neither started nor kept."""
        return next((b for b in self.branches if b not in self.started | self.kept), None)

    def gathered(self, context: dict[str, Any]) -> dict[str, Any]:
        """The context once the branches' results are gathered (language.State and Map):
        a parallel state's one by one in declaration order, each as a task's result; a
        map's in item order at `results`, its tolerated failures at `<results>_failures`."""
        spec = self.spec.map
        if spec is None:
            for branch in self.branches:
                result = self.results.get(branch)
                if isinstance(result, dict):
                    context = {**context, **result}
                elif result is not None:
                    context = {**context, branch: result}
            return context
        done = [self.results[b] for b in self.branches if b in self.results]
        context = {**context, spec.results: done}
        if self.failures:
            context[f"{spec.results}_failures"] = [
                {"index": int(b), "error_type": f.get("error_type"), "message": f.get("message")}
                for b in self.branches
                if (f := self.failures.get(b)) is not None
            ]
        return context


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
        # every step's latest try and its job, by (kind, entered_seq, step): a branch's answer
        # is taken from its own latest try, of the entry that ordered the latest work
        self.tried: dict[tuple[str, Any, Any], tuple[RunTask, str]] = {}
        self.fans: dict[int, Fanned] = {}  # the model of each parallel or map state entry
        self.armed: dict[str, StartTimer] = {}  # timers in Redis: armed, not fired, not cancelled
        self.timers: dict[str, StartTimer] = {}  # every timer ever armed
        self.cancelled: set[str] = set()  # cancelled after their commit: they may race
        self.expected_timers: set[str] = set()  # armed by effects - cancelled - delivered
        # the model of the saga: compensable steps (state, entered_seq) completed, on time or
        # late, and not yet undone, in completion order; every step that ever completed; the
        # compensable tries ordered and not yet answered, lost or dropped; every step's tries
        self.stack: list[tuple[str, int]] = []
        self.completed: set[tuple[str, int]] = set()
        self.flight: list[Try] = []
        self.steps: dict[tuple[str, int, str], Step] = {}  # by (kind, entered_seq, state)
        self.saves = _saves(d.transitions)
        self.loaded: tuple[dict[str, str], Instance] | None = None
        self.replayed = -1  # the history's length when it was last replayed
        self.halting = False  # the event being checked is a task failure nothing handles
        self.append(Event(f"start-{IID}", ev.STARTED, IID, T0, {"input": input}))
        self.deliver([0])

    @property
    def instance(self) -> Instance:
        """The stored instance, read back (from_fields) once per store."""
        if self.loaded is None or self.loaded[0] is not self.stored:
            self.loaded = (self.stored, Instance.from_fields(self.stored))
        return self.loaded[1]

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

    def answer(
        self,
        job: str,
        ok: bool,
        result: Any,
        copies: int,
        fresh_ids: bool = False,
        failure: dict[str, Any] = FAILURES[0],
    ) -> None:
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
            data |= {**failure, "message": f"boom {self.job_order.index(job)}"}
        event = Event(f"{job}-{type_}", type_, IID, self.stamp(), data)
        self.append_copies(event, copies, fresh_ids)

    def append_copies(self, event: Event, copies: int, fresh_ids: bool) -> None:
        if not fresh_ids:
            self.append(event, copies)
            return
        for n in range(copies):  # re-emitted, not redelivered: the applier cannot tell
            self.append(Event(f"{event.id}~{n}" if n else event.id, *_rest(event)))

    def lose(self, job: str) -> None:
        """The watchdog reports the job lost, as orchestrator.runtime.watchdog does."""
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
        # stored as the applier stores it: only the fields that changed, found without
        # encoding those whose value is still the loaded one (so the transition must
        # never have changed a value in place)
        changed = inst.changed_fields(self.instance, self.stored)
        whole = inst.to_fields()
        assert changed == {k: v for k, v in whole.items() if self.stored.get(k) != v}
        self.stored = {**self.stored, **changed}
        assert self.stored == whole

    def apply(self, before: Instance, event: Event) -> Instance:
        if event.id in self.applied:
            return before  # a duplicate emission: the applier skips it
        try:
            PayloadSchemas(self.d).check(event.type, event.data)
            result = transition(self.d, before, event)
        except (GuardFailed, SchemaViolation):
            self.dead += 1  # dead-lettered: not applied, not counted
            return before
        self.applied.add(event.id)
        after = result.instance
        self.check(before, event, result)
        raw = json.loads(event.to_json())
        for (
            passed
        ) in result.passed:  # as orchestrator.store.instances shows them: before the event's entry
            entry = {"seq": after.seq, "event": raw, "outcome": PASSED, "to": passed.state}
            self.history.append({**entry, "status": "running"})
        self.history.append(
            {
                "seq": after.seq,
                "event": raw,
                "outcome": result.outcome,
                "to": after.state,
                "status": after.status,
            }
        )
        self.results.append(result)
        return after

    def dispatch(self, result: Result) -> None:
        """The effects, in order, in one MULTI (orchestrator.runtime.dispatch)."""
        seq = result.instance.seq
        started: set[str] = set()
        for index, effect in enumerate(result.effects):
            if isinstance(effect, RunTask):
                job = f"{IID}-{seq}-{index}"  # dispatch.job_id
                self.jobs[job] = self.watched[job] = effect
                self.latest, self.latest_job = effect, job
                self.tried[(effect.kind, effect.entered_seq, effect.state)] = (effect, job)
                self.job_order.append(job)
                self.ordered(effect)
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

    def ordered(self, task: RunTask) -> None:
        """A try is ordered: within its step's budget, never after its step ended, and an
        undo never while a compensable try is in flight (it could still complete)."""
        name, branch = split_step(task.state)
        state = self.d.states[name]
        spec = state.step_task(branch, task.kind)
        assert spec is not None and task.task == spec.path
        step = self.steps.setdefault((task.kind, task.entered_seq, task.state), Step(spec))
        assert not step.closed, f"{task.kind} of {task.state} tried again after {step.closed}"
        step.tries += 1
        assert task.attempt == step.tries, (task, step)
        # each try after the first follows a failure taken: lost (within LOST_TRIES), or one
        # of its attempts; so no step is tried more than its attempts + LOST_TRIES
        assert step.tries - 1 == step.lost + step.failed, (task, step)
        assert step.lost <= LOST_TRIES and step.failed < spec.attempts, (task, step)
        assert step.tries <= spec.attempts + LOST_TRIES, (task, step)
        if task.kind == "compensation":
            assert not self.flight, f"{task.state} undone while {self.flight} are in flight"
        elif state.step_task(branch, "compensation") is not None:
            self.flight.append((task.entered_seq, task.attempt, task.state))
        if task.kind == "task" and branch is not None:
            self.branch_ordered(self.fans[task.entered_seq], branch, task.attempt)

    @staticmethod
    def branch_ordered(fan: Fanned, branch: str, attempt: int) -> None:
        """A branch's try: its first once an entry, and never of one kept; a map's items
        in order, with never more than `max_concurrency` of them unsettled at once."""
        assert not fan.settled, f"{branch} tried after its state answered"
        if attempt > 1:  # a retry: of a branch still running
            assert branch in fan.open, (branch, fan)
            return
        assert branch in fan.branches and branch not in fan.started | fan.kept, (branch, fan)
        if fan.spec.map is not None:
            assert branch == fan.next_item(), (branch, fan)
            assert not fan.failing(), f"item {branch} started with the map failing"
        fan.started.add(branch)
        fan.open.add(branch)
        if fan.spec.map is not None:
            assert len(fan.open) <= fan.spec.map.max_concurrency, fan
            tally(f"{len(fan.open)} items at once")

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
        assert after.seq == len(self.results) + 1
        # a finished instance never changes again and orders nothing
        if before.finished:
            assert (outcome, effects) == ("ignored", ())
            assert after == before.evolve(seq=before.seq + 1, updated_at=event.at)
        if outcome == "ignored":
            assert effects == (), result.note
            assert after == unchanged, result.note
        # a timer that was cancelled, should it fire anyway, is stale (orchestrator.store.timers)
        if fired in self.cancelled:
            assert (outcome, after) == ("ignored", unchanged), result.note
        # an answer is taken only from the work the instance waits for: the latest RunTask,
        # or a branch's latest try in the entry that ordered it; or late, from a compensable
        # try in flight (check_answer)
        if event.type in ANSWERS and outcome not in ("ignored", "late"):
            latest = self.latest
            assert latest is not None
            undo = event.type in (ev.COMPENSATION_COMPLETED, ev.COMPENSATION_FAILED)
            step = event.data.get("state", latest.state)
            kind = "compensation" if undo else "task"
            tried, job = self.tried.get((kind, event.data.get("entered_seq"), step), (None, ""))
            assert tried is not None, f"{kind} answer of {step}: never ordered"
            branch = not undo and isinstance(step, str) and split_step(step)[1] is not None
            assert tried is latest or (branch and tried.entered_seq == latest.entered_seq)
            assert event.type in (answer_type(tried, True), answer_type(tried, False))
            assert binding(event.data) == (tried.entered_seq, tried.attempt)
            assert event.data.get("job", job) == job
        self.halting = False
        self.check_answer(before, event, result)
        self.check_compensation(before, event, result)
        self.check_saves(before, event, result)
        # an instance fails halted only on a task failure that no row handles (and that is
        # not retried); `retry` resumes it
        if after.halted:
            assert (after.status, after.compensating_to) == ("failed", None)
            assert not after.finished
            assert self.halting or before.halted, f"halted by {event.type}: {result.note}"
        if event.type == ev.RESUME and before.halted:
            assert (outcome, after.halted) == ("retry", False), result.note
        if event.type == ev.CANCEL and before.halted:
            tally(f"a halted instance cancelled: {after.status}")
        self.expected_timers.discard(fired)
        self.enter_fan(before, event, result)
        if after.finished:  # nothing done is left undone: an unsuccessful end waited for all
            if after.state not in self.success:
                assert not self.flight, f"ended {after.state} with {self.flight} in flight"
            self.flight.clear()
        self.dispatch(result)
        # the instance follows exactly the compensable tries ordered and not yet settled
        assert after.inflight == tuple(self.flight), (after.inflight, self.flight)
        if after.status == "compensating":  # it waits for tries in flight, or it undoes a step
            assert (after.attempt == 0) == bool(after.inflight), (after.attempt, after.inflight)
        # the instance's timers are those its effects armed, minus cancelled, minus delivered
        assert set(after.timers) == self.expected_timers
        if after.finished:  # and nothing is left behind: no stack, no parked event, no timer,
            # no branch
            assert (after.compensations, after.parked, after.timers) == ((), (), ())
            assert not self.armed
            assert after.fan is None, after.fan
        if after.fan is not None and after.entered_seq in self.fans:
            self.check_fan(after, self.fans[after.entered_seq])
        if after.status == "running":  # parked events bound to an entry left were dropped
            for parked in after.parked:
                assert parked.entered_seq in (None, after.entered_seq), parked
        assert not {p.type for p in after.parked} & ev.ENGINE_TYPES  # those are never parked

    def check_answer(self, before: Instance, event: Event, result: Result) -> None:
        """A compensable try in flight that answers is settled, late if its state was left;
        any other answer is taken only from the try the instance waits for."""
        if event.type not in ANSWERS or before.finished:
            return
        after, outcome, data = result.instance, result.outcome, event.data
        undo = event.type in (ev.COMPENSATION_COMPLETED, ev.COMPENSATION_FAILED)
        ok = event.type in (ev.TASK_COMPLETED, ev.COMPENSATION_COMPLETED)
        key = None if undo else try_of(data)
        if key is not None and key in self.flight:
            current = self.current_try(before, key)
            assert outcome != "ignored", f"{key} in flight, answer dropped: {result.note}"
            assert (outcome == "late") != current, (key, outcome, result.note)
            self.flight.remove(key)
        else:
            assert outcome != "late", f"late answer of {key}, not in flight: {self.flight}"
        if outcome == "late":
            assert key is not None
            tally(f"late {event.type} while {before.status}")
            branch = split_step(key[2])[1]
            if branch is not None:  # no longer running, whatever its answer
                self.fans[key[0]].open.discard(branch)
            if ok:  # a finished step: its undo due; a state's result is in the context
                self.complete(key[2], key[0])
                result_ = data.get("result")
                if branch is not None:  # a branch's enters only as its state gathers them
                    assert after.context == before.context, result.note
                    if key[0] == before.entered_seq:  # the entry `retry` would resume keeps it
                        tally("a late branch kept for retry")
                        self.fans[key[0]].results[branch] = result_
                elif isinstance(result_, dict):
                    assert all(after.context.get(k) == v for k, v in result_.items())
                elif result_ is not None:
                    assert after.context.get(key[2]) == result_
            return
        if key is not None and split_step(key[2])[1] is not None:
            self.check_branch(before, event, result, ok)
            return
        self.check_current(before, event, result, "compensation" if undo else "task", ok)

    def current_try(self, before: Instance, key: Try) -> bool:
        """Whether a try is the one the running state entry waits for: its task's current
        try, or a branch's latest try while the model has the branch running."""
        state, branch = split_step(key[2])
        if before.status != "running" or state != before.state or key[0] != before.entered_seq:
            return False
        if branch is None:
            return key[1] == before.attempt
        step = self.steps.get(("task", key[0], key[2]))
        return step is not None and not step.closed and step.tries == key[1]

    def check_branch(self, before: Instance, event: Event, result: Result, ok: bool) -> None:
        """A branch's answer is taken only from its current try, once; a failure is retried
        under the branch's own budget or recorded; and the state answers its table exactly
        when the model's branches settle: with its results gathered, or with its first
        failure (routed by its error type, or halting the instance)."""
        after, outcome, data = result.instance, result.outcome, event.data
        key = try_of(data)
        assert key is not None
        state, branch = split_step(key[2])
        assert branch is not None
        if not self.current_try(before, key):
            assert outcome == "ignored", result.note
            return
        step = self.steps[("task", key[0], key[2])]
        fan = self.fans[key[0]]
        if not ok and key[1] in step.failed_tries:  # a second report of a failed try
            assert outcome == "ignored", result.note
            return
        assert outcome != "ignored", result.note
        if ok:
            step.closed = "its completion"
            self.complete(key[2], key[0])
            fan.results[branch] = data.get("result")
        else:
            step.failed_tries.add(key[1])
            retry = self.retried(step, data)
            assert (outcome == "retry") == retry, (outcome, result.note, step, data)
            if retry:
                moved = (after.state, after.status, after.entered_seq)
                assert moved == (before.state, "running", before.entered_seq), result.note
                return
            step.closed = step.closed or "its last try failed"
            fan.failures[branch] = {
                k: data[k] for k in ("error_type", "error_types", "message") if k in data
            }
        fan.open.discard(branch)
        if not fan.settles():
            assert outcome == "branch", result.note
            moved = (after.state, after.status, after.entered_seq)
            assert moved == (before.state, "running", before.entered_seq), result.note
            return
        fan.settled = True
        if fan.failing():
            tally(f"a {'parallel' if fan.spec.map is None else 'map'} state failed")
            first = next(iter(fan.failures.values()))
            self.check_routed(result, state, ev.TASK_FAILED, first)
            return
        tally(f"a {'parallel' if fan.spec.map is None else 'map'} state completed")
        assert after.context == fan.gathered(before.context), (after.context, fan)
        self.check_routed(result, state, ev.TASK_COMPLETED, {})

    def enter_fan(self, before: Instance, event: Event, result: Result) -> None:
        """A parallel or map state entered: the model of its branches. Entered again by
        `workflow.retry`, it keeps the results of the entry it resumes, and exactly the
        branches that did not complete run again."""
        after = result.instance
        spec = self.d.states.get(after.state or "")
        if after.fan is None or spec is None or not spec.fans_out or after.status != "running":
            return
        if after.entered_seq in self.fans:
            return
        kept: dict[str, Any] = {}
        if event.type == ev.RESUME and before.halted:
            kept = dict(self.fans[before.entered_seq].results)
            tally(f"a fan resumed, {len(kept)} kept")
        if spec.map is None:
            branches = tuple(b.name for b in spec.parallel)
        else:
            items = after.context.get(spec.map.items)
            assert isinstance(items, list), items
            branches = tuple(str(i) for i in range(len(items)))
        fan = self.fans[after.entered_seq] = Fanned(spec, branches, frozenset(kept), kept)
        if spec.map is None:
            started = {
                split_step(t.state)[1]
                for t in result.effects
                if isinstance(t, RunTask) and t.entered_seq == after.entered_seq
            }
            assert started == set(branches) - fan.kept, (started, fan)

    def check_fan(self, after: Instance, fan: Fanned) -> None:
        """The instance's branches are the model's: the same completed, with the same
        results, the same failed; while it runs, the same running, each at its try; and a
        map that is not failing runs as many items as it may."""
        assert after.fan is not None
        assert after.fan.results == fan.results, (after.fan, fan)
        # (a stored fan's failures come back in branch-name order: which failed first is
        # the instance's to know otherwise, see test_a_waiting_map_routes_its_failure_...)
        assert set(after.fan.failures) == set(fan.failures), (after.fan, fan)
        if after.status != "running":
            return
        assert set(after.fan.tries) == fan.open, (after.fan, fan)
        for branch, (attempt, lost) in after.fan.tries.items():
            step = self.steps[("task", after.entered_seq, step_name(fan.spec.name, branch))]
            assert (attempt, lost) == (step.tries, step.lost), (branch, after.fan, step)
        spec = fan.spec.map
        if spec is not None and not fan.failing():
            assert len(fan.open) == spec.max_concurrency or fan.next_item() is None, fan

    def check_current(
        self, before: Instance, event: Event, result: Result, kind: str, ok: bool
    ) -> None:
        """An answer of the try the instance waits for is taken, once; a failure is retried,
        routed by its type, or halts the instance, as the model says."""
        after, outcome, data = result.instance, result.outcome, event.data
        waits = "compensating" if kind == "compensation" else "running"
        current = (
            before.status == waits
            and before.attempt > 0
            and binding(data) == (before.entered_seq, before.attempt)
        )
        if not current:
            assert outcome == "ignored", result.note
            return
        state = before.compensations[-1] if kind == "compensation" else before.state
        assert state is not None
        step = self.steps[(kind, before.entered_seq, state)]
        if not ok and before.attempt in step.failed_tries:  # a second report of a failed try
            assert outcome == "ignored", result.note
            return
        assert outcome != "ignored", result.note
        if ok:
            step.closed = "its completion"
            if kind == "task":
                self.complete(state, before.entered_seq)
            return
        step.failed_tries.add(before.attempt)
        retry = self.retried(step, data)
        assert (outcome == "retry") == retry, (outcome, result.note, step, data)
        if retry:  # a try lost with its worker never counts as a failure while LOST_TRIES last
            moved = (after.state, after.status, after.attempt, after.lost)
            assert moved == (before.state, before.status, before.attempt, step.lost), result.note
            return
        if kind == "compensation":  # failed, resumable: the stack intact
            assert (outcome, after.status, after.halted) == ("failed", "failed", False)
            assert (after.compensating_to, after.compensations) == (
                before.compensating_to,
                before.compensations,
            )
            return
        self.check_routed(result, state, ev.TASK_FAILED, data)

    def check_routed(self, result: Result, state: str, type_: str, data: dict[str, Any]) -> None:
        """A state's task answer meets the table: the first row it matches fires; a failure
        that none handles fails the instance, halted, until `retry`."""
        after, outcome = result.instance, result.outcome
        row = self.first_row(type_, state, data)
        if row is None:  # nothing handles it: the instance fails, halted, until `retry`
            assert type_ == ev.TASK_FAILED, f"no row takes {type_} from {state}"
            tally("a task failure nothing handles")
            assert (outcome, after.status, after.state, after.halted) == (
                "failed",
                "failed",
                state,
                True,
            ), result.note
            assert f"state {state!r}" in (after.reason or "")
            self.halting = True
            return
        assert outcome in ("transition", "compensating") and not after.halted, result.note
        if after.status == "compensating":
            assert after.compensating_to == row.target
        else:
            assert row.target in (after.state, *(p.state for p in result.passed))

    @staticmethod
    def retried(step: Step, data: dict[str, Any]) -> bool:
        """Whether a failure of the step's current try is tried again: a lost try is, apart
        from the attempts, while LOST_TRIES last; a non-retryable failure ends the tries."""
        if data.get("error_type") == TASK_LOST and step.lost < LOST_TRIES:
            step.lost += 1
            tally("a lost try retried")
            return True
        step.failed += 1
        if data.get("retryable") is False or step.spec.non_retryable & reported_types(data):
            step.closed = "a failure not retried"
            tally("a failure not retried")
            return False
        return step.failed < step.spec.attempts

    def first_row(self, type_: str, state: str, data: dict[str, Any]) -> TransitionSpec | None:
        """The row a task answer takes (the model's own reading): the first row on its type
        from the state naming no error type, or one the failure reports."""
        for row in self.d.transitions:
            if row.event != type_:
                continue
            if row.sources is not None and state not in row.sources:
                continue
            if row.errors is not None and not row.errors & reported_types(data):
                continue
            assert row.guard is None, "the model reads no guard"
            return row
        return None

    def complete(self, step: str, seq: int) -> None:
        """A step's task completed, once: if it names a compensation, it is due."""
        assert (step, seq) not in self.completed, f"{step} (entry {seq}) completed twice"
        self.completed.add((step, seq))
        state, branch = split_step(step)
        if self.d.states[state].step_task(branch, "compensation") is not None:
            self.stack.append((step, seq))

    def check_compensation(self, before: Instance, event: Event, result: Result) -> None:
        """Completed steps with a compensation (on time or late) are undone once each, newest
        first, and no other step is: the model's stack is the instance's."""
        after, accepted = result.instance, result.outcome != "ignored"
        if event.type == ev.COMPENSATION_COMPLETED and accepted:
            assert before.status == "compensating"
            assert self.latest is not None and self.stack, "undo with nothing done"
            undone, _ = self.stack.pop()
            assert undone == self.latest.state == event.data.get("state", undone)
        runs = [e for e in result.effects if isinstance(e, RunTask)]
        for task in runs:  # each state's work is its own task, each undo its own compensation
            # and is work the instance then waits for: none is ordered and abandoned at once
            state, branch = split_step(task.state)
            if task.kind == "task" and branch is not None:  # a try of a branch running
                moved = (after.status, after.state, after.entered_seq)
                assert moved == ("running", state, task.entered_seq), task
                assert after.fan is not None, task
                assert after.fan.tries.get(branch, (0, 0))[0] == task.attempt, task
                continue
            awaited = after.compensations[-1] if after.status == "compensating" else after.state
            assert (task.kind == "compensation") == (after.status == "compensating")
            assert (task.state, task.entered_seq, task.attempt) == (
                awaited,
                after.entered_seq,
                after.attempt,
            ), task
        for task in (t for t in runs if t.kind == "compensation"):
            assert after.status == "compensating"
            assert self.stack and task.state == self.stack[-1][0], (task, self.stack)
        if after.finished:
            if after.state not in self.success:
                assert self.stack == [], f"ended {after.state} with {self.stack} never undone"
            self.stack.clear()
        else:
            assert after.compensations == tuple(state for state, _ in self.stack)

    def check_saves(self, before: Instance, event: Event, result: Result) -> None:
        """A row's `save` puts the data of the event that fired it into the context."""
        if not self.saves:
            return
        after = result.instance
        kept = {p.id for p in after.parked}
        consumed = [p for p in before.parked if p.id not in kept]
        if result.outcome not in ("ignored", "parked") and event.id not in kept:
            consumed.append(event)
        consumed = [e for e in consumed if e.type in self.saves]

        def fired(e: Event) -> bool:
            """Known to have fired its row: the event applied, or a parked one that left the
            parked events unbound (so not dropped as stale) while the instance goes on."""
            return e is event or (e.entered_seq is None and not after.finished)

        for e in filter(fired, consumed):
            tally(f"saved {e.type}{'' if e is event else ' (parked)'}")
        for save in set(self.saves.values()):
            events = [e for e in consumed if self.saves[e.type] == save]
            if save is True:  # merged key by key
                for e in filter(fired, events):
                    assert all(after.context.get(k) == v for k, v in e.data.items()), e
            elif isinstance(save, str):  # under its key: the data of one that fired
                if any(map(fired, events)):
                    assert after.context.get(save) in [e.data for e in events], save
                elif not events:
                    assert after.context.get(save) == before.context.get(save), save
            else:  # log_note: each event that fired appends its ref to `notes`
                assert save is log_note
                old, new = before.context.get("notes", []), after.context.get("notes", [])
                assert new[: len(old)] == old
                added = Counter(new[len(old) :])
                assert added <= Counter(e.data.get("ref") for e in events), (added, events)
                assert {e.data.get("ref") for e in events if fired(e)} <= set(added)

    # -- the invariants of the stored instance --------------------------------

    def check_stored(self) -> None:
        inst = self.instance
        assert inst.seq == len(self.results) == len(self.applied)
        if self.replayed != len(self.history):  # replayed again whenever it grew
            report = replay(self.d, inst, self.history)
            assert report.matches, report.summary()
            assert report.rebuilt.to_fields() == self.stored
            self.replayed = len(self.history)
        # every timer the instance knows is armed in Redis or on its way in the inbox
        pending = {Event.from_json(raw).data.get("timer") for raw in self.inbox}
        assert set(inst.timers) <= set(self.armed) | pending
        # and every timer armed in Redis is one it knows, so leaving the entry cancels it
        assert set(self.armed) <= set(inst.timers)


def _rest(event: Event) -> tuple[str, str, float, dict[str, Any]]:
    return event.type, event.instance_id, event.at, event.data


def _saves(rows: tuple[TransitionSpec, ...]) -> dict[str, Any]:
    """What each event type's rows save; one way per type, so that the model can tell."""
    saves: dict[str, Any] = {}
    for row in rows:
        if row.save is not None:
            assert saves.setdefault(row.event, row.save) == row.save, row
    assert all(r.save is not None for r in rows if r.event in saves)
    return saves


# ---- the state machine --------------------------------------------------------


class WorldMachine(RuleBasedStateMachine):
    workflow: ClassVar[type[Workflow]]
    input: ClassVar[dict[str, Any]] = {}
    success: ClassVar[frozenset[str]] = frozenset()
    opening: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = ()  # users' first events

    def __init__(self) -> None:
        super().__init__()
        self.world = World(self.workflow, dict(self.input), self.success)
        for type_, data in self.opening:  # applied at once, so that runs get going
            id_ = self.world.new_id("x")
            event = Event(id_, type_, IID, self.world.stamp(), {**data, "ref": id_})
            self.world.append(event)
            self.world.deliver([len(self.world.inbox) - 1])

    @property
    def finished(self) -> bool:
        return self.world.instance.finished

    @precondition(lambda self: bool(self.world.jobs))
    @rule(
        pick=st.integers(0, 20),
        ok=st.sampled_from([True, True, True, False]),
        result=results,
        copies=st.integers(1, 3),
        failure=failures,
    )
    def job_answers(
        self, pick: int, ok: bool, result: Any, copies: int, failure: dict[str, Any]
    ) -> None:
        jobs = sorted(self.world.jobs)
        self.world.answer(jobs[pick % len(jobs)], ok, result, copies, failure=failure)

    @precondition(lambda self: bool(self.world.jobs))
    @rule(
        ok=st.sampled_from([True, True, True, False]),
        result=results,
        copies=st.integers(1, 3),
        picks=st.lists(st.integers(0, 50), max_size=4),
        failure=failures,
    )
    def job_answers_and_applier_catches_up(
        self, ok: bool, result: Any, copies: int, picks: list[int], failure: dict[str, Any]
    ) -> None:
        """The common case, so that runs get deep: the newest job answers, all is applied."""
        newest = max(self.world.jobs, key=self.world.job_order.index)
        self.world.answer(newest, ok, result, copies, failure=failure)
        self.world.deliver(picks + [0] * len(self.world.inbox))

    @precondition(lambda self: bool(self.world.watched))
    @rule(pick=st.integers(0, 20))
    def job_reported_lost(self, pick: int) -> None:
        # the worker may be a zombie that still answers later: its job stays in RQ
        jobs = sorted(self.world.watched)
        self.world.lose(jobs[pick % len(jobs)])

    @precondition(lambda self: bool(self.world.watched))
    @rule()
    def worker_dies_and_the_retry_runs(self) -> None:
        """The newest job's worker dies: the watchdog reports it lost, the applier catches
        up, and the retry it arms falls due at once; so that steps run out of LOST_TRIES."""
        world = self.world
        world.lose(max(world.watched, key=world.job_order.index))
        world.deliver([0] * len(world.inbox))
        for timer in sorted(t for t, s in world.armed.items() if s.event_type == ev.RETRY_DUE):
            world.fire(timer, 1)
        world.deliver([0] * len(world.inbox))

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
        self.emit(types[type_index % len(types)], data, back, applied_now)

    def emit(self, type_: str, data: dict[str, Any], back: int | None, applied_now: bool) -> None:
        if back is not None:
            data = {**data, "entered_seq": self.world.instance.entered_seq - back}
        id_ = self.world.new_id("x")
        data = {**data, "ref": id_}  # what Ledger's `save=log_note` rows keep
        self.world.append(Event(id_, type_, IID, self.world.stamp(), data))
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

    @precondition(lambda self: self.world.instance.status == "failed" and not self.finished)
    @rule()
    def operator_gives_up_on_a_failed_instance(self) -> None:
        """`cancel` of an instance failed by a task (halted) or by a compensation: what was
        done is undone, then it ends cancelled; applied at once."""
        reason = {"reason": "given up"}
        self.world.append(Event(self.world.new_id("c"), ev.CANCEL, IID, self.world.stamp(), reason))
        self.world.deliver([len(self.world.inbox) - 1])

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


class LedgerWorld(WorldMachine):
    workflow = Ledger
    success = frozenset({"settled"})
    opening = (("offer", {"amount": 10}),)

    @precondition(lambda self: not self.finished)
    @rule(
        type_=st.sampled_from(["skip", "skip", "memo", "note"]),
        data=external_data,
        back=entries_back,
        applied_now=st.booleans(),
    )
    def user_moves_on(
        self, type_: str, data: dict[str, Any], back: int | None, applied_now: bool
    ) -> None:
        """Ledger's own events, more often than `user_emits` sends them: a `skip` leaves
        `quoting` with its try still running, whose answer is then late."""
        self.emit(type_, data, back, applied_now)


class FanWorld(WorldMachine):
    """A world whose workflow runs branches: they answer together more often than one by
    one, and a halted instance is resumed at once, so that runs reach the fan-in and the
    entries `workflow.retry` resumes."""

    @precondition(lambda self: len(self.world.jobs) > 1)
    @rule(
        answers=st.lists(
            st.tuples(st.integers(0, 20), st.sampled_from([True, True, True, False]), results),
            min_size=2,
            max_size=4,
        ),
        failure=failures,
        picks=st.lists(st.integers(0, 50), max_size=4),
    )
    def jobs_answer_together(
        self, answers: list[tuple[int, bool, Any]], failure: dict[str, Any], picks: list[int]
    ) -> None:
        world = self.world
        for pick, ok, result in answers:
            if world.jobs:
                jobs = sorted(world.jobs)
                world.answer(jobs[pick % len(jobs)], ok, result, 1, failure=failure)
        world.deliver(picks + [0] * len(world.inbox))

    @precondition(lambda self: self.world.instance.halted)
    @rule()
    def operator_retries_at_once(self) -> None:
        self.world.append(Event(self.world.new_id("r"), ev.RESUME, IID, self.world.stamp(), {}))
        self.world.deliver([len(self.world.inbox) - 1])


class CheckoutWorld(FanWorld):
    """Three branches at once (one retried, one undone by nothing), then a plain step."""

    workflow = Checkout
    success = frozenset({"shipped"})


class MapWorld(FanWorld):
    """A world whose map's items arrive with `go`: mostly two to four of them, so that two
    may fail; sometimes none or one."""

    success = frozenset({"done"})

    @initialize(
        items=st.lists(st.integers(0, 9), min_size=2, max_size=4) | st.just([]) | st.just([7])
    )
    def items_arrive(self, items: list[int]) -> None:
        self.emit("go", {"items": items}, None, applied_now=True)


class BatchWorld(MapWorld):
    """Two items at once, one failure tolerated, waiting for all, each item undone."""

    workflow = Batch


class SweepWorld(MapWorld):
    """Two items at once, failing fast at the first failed one: halted unless Declined."""

    workflow = Sweep


MACHINES = [
    SagaWorld,
    ApprovalWorld,
    OrderWorld,
    HastyWorld,
    StuckWorld,
    LedgerWorld,
    CheckoutWorld,
    BatchWorld,
    SweepWorld,
]


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


class Fussy(Workflow):
    """A map that waits for all its items, and routes its failure by its first one's type."""

    waiting = State(initial=True)
    mapping = State(
        map=Map(double, items="items", max_concurrency=2, tolerated_failures=1),
        on_failure="wait_all",
    )
    done = State(final=True)
    declined = State(final=True, outcome="failed")
    transitions = [
        On("go", source=waiting, target=mapping, save=True),
        On("task.completed", source=mapping, target=done),
        On("task.failed", source=mapping, target=declined, error=Declined),
    ]


def fussy_run(stored: bool) -> Instance:
    """Fussy's map of three items: item 1 fails first (Declined), then item 0 (Fatal: one
    failure too many), then item 2, started meanwhile, completes; the instance stored and
    loaded after every event, as the applier does between batches, or kept in memory, as
    replay does."""
    d = Fussy.definition
    inst = Instance(id=IID, workflow=d.name, version=d.version, created_at=T0)
    n = itertools.count(1)

    def send(type_: str, data: dict[str, Any]) -> list[RunTask]:
        nonlocal inst
        result = transition(d, inst, Event(f"e{next(n)}", type_, IID, T0, data))
        inst = Instance.from_fields(result.instance.to_fields()) if stored else result.instance
        return [e for e in result.effects if isinstance(e, RunTask)]

    def answer(task: RunTask, **data: Any) -> list[RunTask]:
        bound = {"state": task.state, "attempt": task.attempt, "entered_seq": task.entered_seq}
        type_ = ev.TASK_FAILED if "error_type" in data else ev.TASK_COMPLETED
        return send(type_, {**bound, **data})

    send(ev.STARTED, {"input": {}})
    first, second = send("go", {"items": [1, 2, 3]})
    (third,) = answer(second, error_type="Declined", error_types=["Declined"], message="no")
    answer(first, error_type="Fatal", error_types=["Fatal"], retryable=False, message="x")
    answer(third, result=6)
    return inst


def test_a_waiting_map_routes_its_failure_by_the_first_item_that_failed() -> None:
    # Given Fussy's map, whose items fail in the order 1 (Declined), then 0 (Fatal)
    in_memory, stored = fussy_run(stored=False), fussy_run(stored=True)
    # Then the first failure, item 1's Declined, routes the state's failure to `declined`
    assert (in_memory.state, in_memory.status) == ("declined", "failed")
    # whether the instance was stored between the events or not (before the fix a stored
    # fan's failures came back in branch-name order, item 0's Fatal was taken as the first:
    # no row handled it, the instance halted, and replaying its history, never stored, gave
    # another instance than the one stored)
    assert (stored.state, stored.status, stored.halted) == ("declined", "failed", False), (
        stored.reason
    )


def test_a_cancelled_parallel_state_leaves_no_branch_running() -> None:
    # Given Checkout's branches running, the compensable two lost with their workers (their
    # retries armed): nothing is in flight to wait for, nothing completed to undo
    world = World(Checkout, {}, CheckoutWorld.success)
    for job, task in sorted(world.watched.items()):
        if task.state != "preparing/label":
            world.lose(job)
    world.deliver([0, 0])
    assert (world.instance.inflight, world.instance.compensations) == ((), ())
    # When a user cancels it: it ends cancelled at once
    world.append(Event("c", ev.CANCEL, IID, world.stamp(), {}))
    world.deliver([0])
    inst = world.instance
    assert (inst.state, inst.status) == ("cancelled", "cancelled")
    # Then no branch is left, as no stack, parked event or timer is (before the fix the
    # built-in cancel target kept the fan: `status` showed its branches running)
    assert inst.fan is None and inst.summary()["branches"] is None

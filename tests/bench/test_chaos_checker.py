"""The chaos checker proves itself: a clean synthetic run passes, each planted fault is caught.

The synthetic histories are made by the engine's own pure transition function
(no Redis, no processes), the way the applier records them, with the sink,
ledger, provider and journal records a faultless run would leave, and the
events the applier publishes with each step (lifecycle events on, as the chaos
workers run), as the collector reads them back from the streams. Each test
then plants one fault in a copy and expects the checker to name it.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from bench.chaos.checker import Snapshot, check, completed_steps
from bench.chaos.collect import attribute
from bench.chaos.effects import notify_keys
from bench.chaos.outbox import entry
from bench.chaos.providers import prism_receipts
from bench.chaos.workload import PAYMENT_TIMEOUT_EVENT, ChaosOrder, ChaosSaga
from notifiers.email import EmailNotifier
from orchestrator.core.definition import LOST_TRIES, Definition
from orchestrator.core.effects import (
    PublishEvent,
    RunTask,
    SendNotification,
    StartTimer,
    describe,
)
from orchestrator.core.events import Event
from orchestrator.core.instance import Instance
from orchestrator.core.machine import transition
from orchestrator.core.publishing import TRANSITIONED
from orchestrator.runtime import publisher
from orchestrator.runtime.dispatch import job_id, timer_event
from orchestrator.runtime.registry import Registry
from orchestrator.store.keys import Keys

REGISTRY = Registry([ChaosOrder, ChaosSaga])
DEFINITION = ChaosOrder.definition
SAGA = ChaosSaga.definition
KEYS = Keys()
LIFECYCLE = publisher.Publishing(lifecycle=True)  # as the chaos workers run
STREAM_IDS = itertools.count(1)  # entry ids of the published streams, in write order


class Run:
    """One instance driven through the pure transition function, recording what a real
    run records: history entries, task calls at the sink, notify keys, and the events
    published (the applier's own completion of a step: business and lifecycle events)."""

    def __init__(
        self, instance_id: str, clock: list[float], definition: Definition = DEFINITION
    ) -> None:
        self.id = instance_id
        self.clock = clock
        self.definition = definition
        self.instance = Instance(instance_id, definition.name, definition.version, clock[0])
        self.history: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.timers: list[Event] = []
        self.notified: list[tuple[str, str]] = []  # (key, channel)
        self.sink: list[dict[str, Any]] = []
        self.done: list[dict[str, Any]] = []  # the calls that returned (chaos:done)
        self.published: list[dict[str, Any]] = []  # as the collector reads the streams

    def now(self) -> float:
        self.clock[0] += 1.0
        return self.clock[0]

    def apply(self, event_type: str, data: dict[str, Any], event_id: str) -> None:
        self.apply_event(Event(event_id, event_type, self.id, self.now(), data))

    def apply_event(self, event: Event) -> None:
        before = self.instance
        result = transition(self.definition, before, event)
        result = publisher.complete(REGISTRY, self.definition, before, event, result, LIFECYCLE)
        after = self.instance = result.instance
        self.history.append(
            {
                "seq": after.seq,
                "event": json.loads(event.to_json()),
                "outcome": result.outcome,
                "from": before.state,
                "to": after.state,
                "status": after.status,
                "note": result.note,
                "effects": [describe(e) for e in result.effects],
            }
        )
        for index, effect in enumerate(result.effects):
            job = job_id(self.id, after.seq, index)
            if isinstance(effect, RunTask):
                self.tasks.append({"job": job, "effect": effect})
            elif isinstance(effect, StartTimer):
                self.timers.append(timer_event(self.id, effect))
            elif isinstance(effect, SendNotification):
                self.notified.append((f"{job}:{effect.to}", effect.channel))
            elif isinstance(effect, PublishEvent):
                self.publish(after.seq, index, effect)

    def publish(self, seq: int, index: int, effect: PublishEvent) -> None:
        """The event as the dispatcher writes it, as the collector reads it back."""
        doc = json.loads(publisher.encode(KEYS, self.instance, job_id(self.id, seq, index), effect))
        partition = KEYS.partition_of(self.id)
        self.published.append(entry(partition, f"{next(STREAM_IDS)}-0", doc))

    def answer(self, ok: bool = True, kind: str | None = None) -> None:
        """The oldest outstanding task call (of `kind`, when given) ran at the sink, returned
        (or raised) and answered."""
        task = next(t for t in self.tasks if kind is None or t["effect"].kind == kind)
        self.tasks.remove(task)
        effect: RunTask = task["effect"]
        kind = effect.kind
        call = {
            "i": self.id,
            "step": effect.state,
            "kind": kind,
            "task": effect.task,
            "job": task["job"],
            "attempt": effect.attempt,
            "entered_seq": effect.entered_seq,
            "pid": 1,
            "at": self.now(),
        }
        self.sink.append(call)
        if ok:
            self.done.append({**call, "at": self.now()})
        event_type = f"{'compensation' if kind == 'compensation' else 'task'}." + (
            "completed" if ok else "failed"
        )
        data: dict[str, Any] = {
            "task": effect.task,
            "state": effect.state,
            "attempt": effect.attempt,
            "entered_seq": effect.entered_seq,
            "job": task["job"],
        }
        data.update({"result": None} if ok else {"error_type": "RuntimeError", "message": "no"})
        self.apply(event_type, data, f"{task['job']}-{event_type}")

    def fire_timer(self) -> None:
        self.apply_event(self.timers.pop(0))


def clean_snapshot() -> Snapshot:
    clock = [1000.0]
    shipped, failed = Run("ok-1", clock), Run("bad-1", clock)
    journal: list[dict[str, Any]] = []
    for run in (shipped, failed):
        run.apply("workflow.started", {"input": _input(run.id, run is failed)}, f"start-{run.id}")
        journal.append(_ack("start", run.id, f"start-{run.id}", "workflow.started"))
        run.answer()  # reserve
        run.apply("chaos.note", {}, f"note-{run.id}")  # consumed where it stands
        journal.append(_ack("emit", run.id, f"note-{run.id}", "chaos.note"))
        run.answer()  # charge
        run.answer()  # pack (emails are due on entering reserve and pack, an SMS on ship)
    shipped.answer()  # ship: done
    for _ in range(DEFINITION.states["ship"].task.attempts - 1):  # type: ignore[union-attr]
        failed.answer(ok=False)
        failed.fire_timer()  # the retry is due
    failed.answer(ok=False)  # the last try: compensate pack, charge, reserve
    for _ in range(3):
        failed.answer()
    assert (shipped.instance.state, failed.instance.state) == ("done", "failed")
    runs = (shipped, failed)
    ledger = {
        run.id: [
            {"key": key, "channel": channel, "status": "sent", "resends": "0"}
            for key, channel in run.notified
        ]
        for run in runs
    }
    provider = [
        {"channel": channel, "key": key, "ref": run.id, "at": 2000.0 + n, "resolution": 0.05}
        for run in runs
        for n, (key, channel) in enumerate(run.notified)
    ]
    return Snapshot(
        instances={run.id: run.instance.to_fields() for run in runs},
        histories={run.id: run.history for run in runs},
        journal=journal,
        ledger=ledger,
        provider=provider,
        sink=[call for run in runs for call in run.sink],
        completions=[line for run in runs for line in run.done],
        faults=[],
        pending={},
        dead_letters=[],
        published=[event for run in runs for event in run.published],
    )


def _input(ref: str, fail: bool) -> dict[str, Any]:
    return {
        "ref": ref,
        "email": f"{ref}@example.com",
        "contact": f"{ref}+orders@example.com",
        "phone": "+15005550006",
        "fail": fail,
    }


def _ack(kind: str, instance: str, event_id: str, event_type: str) -> dict[str, Any]:
    return {"kind": kind, "instance": instance, "event_id": event_id, "type": event_type, "at": 0}


def flagged(snapshot: Snapshot) -> set[str]:
    return check(snapshot, REGISTRY.get).flagged


@pytest.fixture
def clean() -> Snapshot:
    return clean_snapshot()


def test_a_clean_run_flags_nothing_and_counts_what_happened(clean: Snapshot) -> None:
    report = check(clean, REGISTRY.get)
    assert report.flagged == set(), report.violations
    figures = report.figures
    assert (figures["instances"], figures["final"]) == (2, 2)
    assert figures["acknowledged"] == 4 and figures["lost_acknowledged"] == 0
    assert figures["notifications"] == 6  # two emails and an SMS each
    assert figures["duplicate_notifications"] == 0 and figures["duplicate_transitions"] == 0
    assert figures["compensations_expected"] == 3
    assert (figures["compensating_instances"], figures["not_undone"], figures["undone_twice"]) == (
        1,
        0,
        0,
    )
    assert figures["task_calls"] == 4 + 3 + 5 + 3  # four steps; three, five tries, three undos
    # each order: started, four transitions; five states entered, charged and noted;
    # completed, or compensated and failed
    assert (figures["published_transitions"], figures["published_business"]) == (10, 14)
    assert figures["published_lifecycle_other"] == 3
    assert figures["published"] == figures["published_expected"] == 27


def test_a_gap_in_the_sequence_numbers_is_flagged(clean: Snapshot) -> None:
    # Given a history that lost its third entry
    del clean.histories["ok-1"][2]
    # Then the gap is named
    report = check(clean, REGISTRY.get)
    assert "sequence" in report.flagged
    assert any("missing seq [3]" in v for v in report.violations["sequence"])


def test_an_event_applied_twice_is_flagged(clean: Snapshot) -> None:
    # Given the note applied a second time, as a new entry at the end
    history = clean.histories["ok-1"]
    again = copy.deepcopy(next(h for h in history if h["event"]["id"] == "note-ok-1"))
    again["seq"] = len(history) + 1
    history.append(again)
    clean.instances["ok-1"]["seq"] = str(len(history))
    assert "duplicate_event" in flagged(clean)
    assert check(clean, REGISTRY.get).figures["duplicate_transitions"] >= 1


def test_a_move_the_transition_function_would_not_make_is_flagged(clean: Snapshot) -> None:
    # Given a history whose first task answer jumped from reserve straight to pack
    entry = next(h for h in clean.histories["ok-1"] if h["from"] == "reserve" and h["to"])
    assert entry["to"] == "charge"
    entry["to"] = "pack"
    # Then replay diverges there
    report = check(clean, REGISTRY.get)
    assert "replay" in report.flagged
    assert any("'state': 'pack'" in v for v in report.violations["replay"])


def test_an_acknowledged_event_missing_from_the_history_is_flagged(clean: Snapshot) -> None:
    clean.journal.append(_ack("emit", "ok-1", "note-never-applied", "chaos.note"))
    report = check(clean, REGISTRY.get)
    assert report.flagged == {"lost_ack"}
    assert report.figures["lost_acknowledged"] == 1


def test_a_duplicate_notification_nothing_explains_is_flagged(clean: Snapshot) -> None:
    # Given the provider received the first email twice, and no kill was recorded
    first = copy.deepcopy(clean.provider[0])
    first["at"] += 0.5
    clean.provider.append(first)
    report = check(clean, REGISTRY.get)
    assert report.flagged == {"unexplained_duplicate"}
    assert report.figures["duplicate_notifications"] == 1


def test_a_duplicate_inside_the_window_with_a_kill_is_explained(clean: Snapshot) -> None:
    # Given the same duplicate, a notification worker killed between the two copies,
    # and the ledger counting the resend
    first = copy.deepcopy(clean.provider[0])
    first["at"] += 3.0
    clean.provider.append(first)
    key = first["key"]
    next(r for r in clean.ledger["ok-1"] if r["key"] == key)["resends"] = "1"
    clean.faults.append({"at": first["at"] - 2.0, "action": "child", "roles": ["notifications"]})
    report = check(clean, REGISTRY.get)
    # Then it is counted, explained, and flagged nowhere
    assert report.flagged == set(), report.violations
    assert report.figures["explained_duplicates"] == 1
    assert report.figures["duplicate_percent"] == pytest.approx(100 / 6)


def test_a_kill_of_another_role_does_not_explain_a_duplicate(clean: Snapshot) -> None:
    first = copy.deepcopy(clean.provider[0])
    first["at"] += 3.0
    clean.provider.append(first)
    next(r for r in clean.ledger["ok-1"] if r["key"] == first["key"])["resends"] = "1"
    clean.faults.append({"at": first["at"] - 2.0, "action": "child", "roles": ["applier"]})
    assert flagged(clean) == {"unexplained_duplicate"}


@pytest.mark.parametrize(
    ("roles", "explained"), [(["redis", "notifications"], True), (["notifications"], False)]
)
def test_a_redis_crash_just_before_the_first_copy_explains_it(
    clean: Snapshot, roles: list[str], explained: bool
) -> None:
    # Given a copy whose first acceptance came a second after the crash (or the kill):
    # a send under way when Redis went is accepted, and the ledger cannot be told
    first = copy.deepcopy(clean.provider[0])
    first["at"] += 3.0
    clean.provider.append(first)
    next(r for r in clean.ledger["ok-1"] if r["key"] == first["key"])["resends"] = "1"
    clean.faults.append({"at": clean.provider[0]["at"] - 1.0, "action": "x", "roles": roles})
    # Then a Redis crash explains it, a worker killed before the send began does not
    assert flagged(clean) == (set() if explained else {"unexplained_duplicate"})


def test_compensations_out_of_order_are_flagged(clean: Snapshot) -> None:
    # Given a failed instance whose refund ran before the parcel was unpacked
    undone = [h for h in clean.histories["bad-1"] if h["event"]["type"] == "compensation.completed"]
    assert [h["event"]["data"]["state"] for h in undone] == ["pack", "charge", "reserve"]
    undone[0]["event"]["data"]["state"], undone[1]["event"]["data"]["state"] = "charge", "pack"
    report = check(clean, REGISTRY.get)
    assert "compensation" in report.flagged
    assert any(
        "undone ['charge', 'pack', 'reserve']" in v for v in report.violations["compensation"]
    )


def test_compensations_out_of_order_at_the_sink_are_flagged(clean: Snapshot) -> None:
    calls = [c for c in clean.sink if c["kind"] == "compensation"]
    calls[0]["at"], calls[1]["at"] = calls[1]["at"], calls[0]["at"]
    assert flagged(clean) == {"compensation"}


def test_a_step_compensated_by_two_runs_is_a_double_refund(clean: Snapshot) -> None:
    refund = copy.deepcopy(next(c for c in clean.sink if c["kind"] == "compensation"))
    refund["entered_seq"] += 100
    clean.sink.append(refund)
    report = check(clean, REGISTRY.get)
    assert "double_refund" in report.flagged
    assert report.figures["double_refunds"] == 1


# -- undone once at the sink: a charge that returned after its state was left -------------


def timed_out_order(instance_id: str, clock: list[float]) -> Run:
    """A chaos_saga order whose payment timeout fired while its charge waited in the queue:
    the engine compensates what it knows of (the reservation) at once."""
    run = Run(instance_id, clock, SAGA)
    run.apply("workflow.started", {"input": _input(instance_id, False)}, f"start-{instance_id}")
    run.answer()  # reserve: the charge is queued, its payment timeout armed
    run.fire_timer()
    assert run.history[-1]["event"]["type"] == PAYMENT_TIMEOUT_EVENT
    assert run.instance.status == "compensating"
    return run


def with_run(snapshot: Snapshot, run: Run) -> Snapshot:
    snapshot.instances[run.id] = run.instance.to_fields()
    snapshot.histories[run.id] = run.history
    snapshot.sink += run.sink
    snapshot.completions += run.done
    assert snapshot.published is not None
    snapshot.published += run.published
    return snapshot


def late_charge(instance_id: str) -> Run:
    """The engine of issue #12: the payment timeout fired while the charge waited; the
    compensation run waits for the charge, which returns late and is refunded first."""
    run = timed_out_order(instance_id, [5000.0])
    assert run.instance.compensations == ("reserve",) and run.instance.inflight
    run.answer()  # the charge, at last: late, its refund pushed
    assert run.history[-1]["outcome"] == "late"
    run.answer(kind="compensation")  # refund
    run.answer(kind="compensation")  # release
    assert run.instance.status == "failed"
    return run


def test_a_charge_returning_after_its_timeout_and_refunded_is_not_flagged(
    clean: Snapshot,
) -> None:
    report = check(with_run(clean, late_charge("late-1")), REGISTRY.get)
    assert report.flagged == set(), report.violations
    assert report.figures["compensating_instances"] == 2


def test_a_charge_that_returned_after_its_timeout_and_was_never_refunded_is_flagged(
    clean: Snapshot,
) -> None:
    # Given the late charge's refund planted away at the sink (as the engine before
    # issue #12 did: the charge recorded as ignored, no refund ever run)
    run = late_charge("late-2")
    run.done = [c for c in run.done if not (c["kind"] == "compensation" and c["step"] == "charge")]
    report = check(with_run(clean, run), REGISTRY.get)
    # Then the sink shows a card charged and never refunded
    assert "unrefunded" in report.flagged
    assert report.figures["not_undone:charge"] == 1
    assert any(
        v.startswith("late-2: charge completed at the sink") and "undone by 0" in v
        for v in report.violations["unrefunded"]
    )


def test_a_step_refunded_twice_at_the_sink_is_flagged(clean: Snapshot) -> None:
    # Given the failed order's refund paid by a second compensation run as well
    refund = next(
        c
        for c in clean.sink
        if c["i"] == "bad-1" and c["step"] == "charge" and c["kind"] == "compensation"
    )
    again = {**refund, "entered_seq": refund["entered_seq"] + 100, "job": "bad-1-97-0"}
    clean.sink.append(again)
    clean.completions.append({**again, "at": again["at"] + 0.5})
    report = check(clean, REGISTRY.get)
    assert "unrefunded" in report.flagged
    assert report.figures["undone_twice"] == report.figures["undone_twice:charge"] == 1
    assert any("bad-1: charge" in v and "undone by 2" in v for v in report.violations["unrefunded"])


def test_a_refund_that_never_returned_is_not_a_refund(clean: Snapshot) -> None:
    # Given the refund called (at the sink) but never returned
    clean.completions = [
        c for c in clean.completions if not (c["kind"] == "compensation" and c["step"] == "charge")
    ]
    report = check(clean, REGISTRY.get)
    assert report.flagged == {"unrefunded"}
    assert report.figures["not_undone:charge"] == 1


def test_a_refund_of_a_charge_that_never_returned_is_flagged(clean: Snapshot) -> None:
    clean.completions = [
        c for c in clean.completions if not (c["kind"] == "task" and c["step"] == "charge")
    ]
    report = check(clean, REGISTRY.get)
    assert report.flagged == {"unrefunded"}
    assert any("never completed at the sink" in v for v in report.violations["unrefunded"])


def test_undone_at_the_sink_out_of_order_is_flagged(clean: Snapshot) -> None:
    undone = [c for c in clean.completions if c["i"] == "bad-1" and c["kind"] == "compensation"]
    assert [c["step"] for c in undone] == ["pack", "charge", "reserve"]
    undone[0]["at"], undone[1]["at"] = undone[1]["at"], undone[0]["at"]
    assert flagged(clean) == {"unrefunded"}


def test_a_late_completion_refunded_as_the_fixed_engine_does_is_not_flagged(
    clean: Snapshot,
) -> None:
    # Given the engine's rule for late completions (not in this engine yet, so the history
    # is written by hand from the payment timeout on): the compensation run waits for the
    # charge in flight; the charge's late completion pushes its refund, so the charge is
    # refunded, then the reservation released: newest first by completion
    run = Run("fixed-1", [5000.0], SAGA)
    run.apply("workflow.started", {"input": _input(run.id, False)}, f"start-{run.id}")
    run.answer()  # reserve
    queued = run.tasks.pop(0)
    charge: RunTask = queued["effect"]
    assert charge.state == "charge"
    timer = run.timers.pop(0)
    _by_hand(run, timer, "compensating", "charge", "compensating", [])
    late = _called(run, "charge", "task", charge.attempt, charge.entered_seq, queued["job"])
    refund = _called(run, "charge", "compensation", 1, 4, f"{run.id}-4-0")
    _by_hand(run, late, "compensating", "charge", "compensating", [refund])
    release = _called(run, "reserve", "compensation", 1, 5, f"{run.id}-5-0")
    _by_hand(run, refund, "compensating", "charge", "compensating", [release])
    _by_hand(run, release, "transition", "failed", "failed", [])
    run.instance = run.instance.evolve(
        seq=len(run.history), state="failed", status="failed", compensations=(), timers=()
    )
    report = check(with_run(clean, run), REGISTRY.get)
    # Then neither the sink's check nor the history's flags it (the replay differs: this
    # engine does not do it yet)
    assert report.flagged <= {"replay"}, report.violations
    assert report.figures["not_undone"] == 0
    assert report.figures["compensations_expected"] == 3 + 2


def test_a_late_completion_is_a_step_of_its_own_state_not_the_one_the_instance_is_in() -> None:
    # Given a charge's completion recorded after the instance reached `failed`
    entry = {
        "seq": 9,
        "event": {"type": "task.completed", "data": {"state": "charge", "job": "x-2-0"}},
        "outcome": "compensating",
        "from": "failed",
    }
    assert completed_steps(SAGA, [entry]) == ["charge"]


def _called(run: Run, step: str, kind: str, attempt: int, entered_seq: int, job: str) -> Event:
    """A call at the sink that returned; its answer, to be recorded by hand."""
    call = {
        "i": run.id,
        "step": step,
        "kind": kind,
        "task": "x",
        "job": job,
        "attempt": attempt,
        "entered_seq": entered_seq,
        "pid": 1,
        "at": run.now(),
    }
    run.sink.append(call)
    run.done.append({**call, "at": run.now()})
    data = {"state": step, "attempt": attempt, "entered_seq": entered_seq, "job": job}
    event_type = f"{kind}.completed"
    return Event(f"{job}-{event_type}", event_type, run.id, run.now(), {**data, "result": None})


def _by_hand(
    run: Run, event: Event, outcome: str, to: str, status: str, effects: list[Event]
) -> None:
    """A history entry written by hand, with what its step publishes: on a change of
    state, the entered state's business events, then the engine's `transitioned`."""
    seq, came_from = len(run.history) + 1, run.history[-1]["to"]
    listed = [f"run {e.data['state']}" for e in effects]
    if to != came_from:
        published = [
            PublishEvent(kind, {"ref": run.id}, event.at, 1)
            for kind in run.definition.states[to].publish
        ]
        moved = {"from": came_from, "to": to, "event": event.type}
        base = {"workflow": run.definition.name, "version": run.definition.version}
        published.append(PublishEvent(TRANSITIONED, {**base, **moved}, event.at))
        for effect in published:
            run.publish(seq, len(listed), effect)
            listed.append(describe(effect))
    run.history.append(
        {
            "seq": seq,
            "event": json.loads(event.to_json()),
            "outcome": outcome,
            "from": came_from,
            "to": to,
            "status": status,
            "note": "by hand",
            "effects": listed,
        }
    )


def test_a_try_run_again_after_it_succeeded_is_flagged(clean: Snapshot) -> None:
    # Given the reserve step run a second time (try 2) although try 1 completed
    call = copy.deepcopy(next(c for c in clean.sink if c["i"] == "ok-1"))
    call.update(attempt=2, job="ok-1-99-0")
    clean.sink.append(call)
    assert {"rerun_after_success", "unanswered_call"} <= flagged(clean)


def test_more_tries_than_configured_are_flagged(clean: Snapshot) -> None:
    # more than the step's attempts and the lost tries retried apart from them
    last = max((c for c in clean.sink if c["step"] == "ship"), key=lambda c: c["attempt"])
    extra = {**last, "attempt": last["attempt"] + LOST_TRIES + 1, "job": "bad-1-98-0"}
    clean.sink.append(extra)
    assert "attempts" in flagged(clean)


def test_a_notification_the_provider_never_received_is_lost(clean: Snapshot) -> None:
    sms = next(r for r in clean.provider if r["channel"] == "sms")
    clean.provider.remove(sms)
    report = check(clean, REGISTRY.get)
    assert report.flagged == {"lost_notification"}
    assert report.figures["lost_notifications"] == 1


def test_a_notification_the_ledger_did_not_finish_is_lost(clean: Snapshot) -> None:
    clean.ledger["bad-1"][0]["status"] = "sending"
    assert flagged(clean) == {"lost_notification"}


def test_an_unfinished_instance_with_nothing_owed_is_an_orphan(clean: Snapshot) -> None:
    clean.instances["ok-1"]["status"] = "running"
    assert {"final", "orphan"} <= flagged(clean)
    # and one with a job still queued is not final, but not an orphan
    clean.pending["ok-1"] = ["job ok-1-9-0 queued"]
    assert "orphan" not in flagged(clean)


def test_a_message_no_notify_effect_asked_for_is_a_phantom(clean: Snapshot) -> None:
    clean.provider.append({"channel": "sms", "key": None, "ref": "x", "at": 1, "resolution": 1})
    assert flagged(clean) == {"phantom_notification"}


# -- published events: exactly one per transition, none without its step, in order ------


def _published(snapshot: Snapshot, instance_id: str, kind: str, **data: str) -> dict[str, Any]:
    assert snapshot.published is not None
    return next(
        e
        for e in snapshot.published
        if e["subject"] == instance_id
        and e["type"] == kind
        and all(e["data"].get(k) == v for k, v in data.items())
    )


def test_a_clean_run_publishes_one_event_per_transition_in_order(clean: Snapshot) -> None:
    assert clean.published is not None
    moves = [
        (e["data"]["from"], e["data"]["to"])
        for e in clean.published
        if e["subject"] == "bad-1" and e["type"] == TRANSITIONED
    ]
    assert moves == [
        ("reserve", "charge"),
        ("charge", "pack"),
        ("pack", "ship"),
        ("ship", "failed"),
    ]
    assert {"published_missing", "published_order"}.isdisjoint(flagged(clean))


@pytest.mark.parametrize(
    ("kind", "data", "named"),
    [
        (TRANSITIONED, {"from": "charge", "to": "pack"}, "charge -> pack on task.completed"),
        ("orchestrator.workflow.started", {}, "started in reserve"),
        ("chaos.order.pack", {}, "chaos.order.pack"),  # a state entry's business event
        ("chaos.order.charged", {}, "chaos.order.charged"),  # a row's
        ("orchestrator.workflow.completed", {}, "orchestrator.workflow.completed"),
    ],
)
def test_a_missing_published_event_is_flagged(
    clean: Snapshot, kind: str, data: dict[str, str], named: str
) -> None:
    # Given the shipped order's event dropped from its stream
    assert clean.published is not None
    clean.published.remove(_published(clean, "ok-1", kind, **data))
    report = check(clean, REGISTRY.get)
    # Then it is missing, named by its instance and step, and nothing else is flagged
    assert report.flagged == {"published_missing"}, report.violations
    assert report.figures["published_missing"] == 1
    (message,) = report.violations["published_missing"]
    assert message.startswith("ok-1: ") and named in message and "missing" in message


def test_an_event_id_published_twice_is_a_duplicate(clean: Snapshot) -> None:
    # Given the failed order's transition to `failed` written twice with the same id
    assert clean.published is not None
    again = copy.deepcopy(_published(clean, "bad-1", TRANSITIONED, to="failed"))
    clean.published.append({**again, "entry": "999999-0"})
    report = check(clean, REGISTRY.get)
    assert report.flagged == {"published_duplicate"}, report.violations
    assert report.figures["published_duplicates"] == 1
    assert any(
        v.startswith("bad-1: event id") and "published 2 times" in v
        for v in report.violations["published_duplicate"]
    )


def test_a_transition_published_twice_under_two_ids_is_a_duplicate(clean: Snapshot) -> None:
    # Given a second `transitioned` of the same step, at another place among its effects
    assert clean.published is not None
    first = _published(clean, "ok-1", TRANSITIONED, to="done")
    seq = first["id"].split("-")[-2]
    history = next(h for h in clean.histories["ok-1"] if str(h["seq"]) == seq)
    history["effects"].append(f"publish {TRANSITIONED}")
    index = len(history["effects"]) - 1
    clean.published.append({**first, "id": f"ok-1-{seq}-{index}", "entry": "999999-0"})
    report = check(clean, REGISTRY.get)
    assert report.flagged == {"published_duplicate"}, report.violations
    assert any(
        "ship -> done" in v and "2 times" in v for v in report.violations["published_duplicate"]
    )


def test_an_event_without_its_step_is_an_orphan(clean: Snapshot) -> None:
    # Given a transition no history shows (at a seq the shipped order never reached), and
    # an event of an instance nobody started
    assert clean.published is not None
    ghost = copy.deepcopy(_published(clean, "ok-1", TRANSITIONED, to="done"))
    ghost["id"], ghost["entry"] = "ok-1-99-0", "999998-0"
    stranger = {**ghost, "id": "nobody-1-0", "subject": "nobody", "entry": "999999-0"}
    clean.published += [ghost, stranger]
    report = check(clean, REGISTRY.get)
    assert report.flagged == {"published_orphan"}, report.violations
    assert report.figures["published_orphans"] == 2
    assert sorted(report.violations["published_orphan"]) == [
        f"nobody: {TRANSITIONED} nobody-1-0 of no known instance",
        f"ok-1: {TRANSITIONED} ok-1-99-0: the history has no seq 99",
    ]


def test_a_transition_the_history_does_not_show_is_an_orphan_and_the_real_one_missing(
    clean: Snapshot,
) -> None:
    # Given the step from pack to ship published as if it had gone from pack to done
    event = _published(clean, "ok-1", TRANSITIONED, to="ship")
    event["data"] = {**event["data"], "to": "done"}
    report = check(clean, REGISTRY.get)
    assert report.flagged == {"published_orphan", "published_missing"}, report.violations
    assert any("pack -> done" in v for v in report.violations["published_orphan"])
    assert any("pack -> ship" in v for v in report.violations["published_missing"])


def test_events_published_out_of_the_history_order_are_flagged(clean: Snapshot) -> None:
    # Given two of the shipped order's transitions swapped in its stream
    assert clean.published is not None
    first = clean.published.index(_published(clean, "ok-1", TRANSITIONED, to="charge"))
    second = clean.published.index(_published(clean, "ok-1", TRANSITIONED, to="pack"))
    clean.published[first], clean.published[second] = (
        clean.published[second],
        clean.published[first],
    )
    report = check(clean, REGISTRY.get)
    assert report.flagged == {"published_order"}, report.violations
    assert report.figures["published_out_of_order"] >= 1
    assert all(v.startswith("ok-1: ") for v in report.violations["published_order"])


def test_a_snapshot_without_the_published_streams_skips_their_checks(clean: Snapshot) -> None:
    clean.published = None
    report = check(clean, REGISTRY.get)
    assert report.flagged == set(), report.violations
    assert "published" not in report.figures


# -- the collector's pure parts: which receipt delivers which notification ---------------


def test_receipts_are_matched_to_ledger_keys_by_message_id_and_by_sms_body(
    clean: Snapshot, tmp_path: Path
) -> None:
    # Given the keys of the shipped order's email and SMS, an email as the channel builds
    # its Message-ID, and an SMS as Prism logs its body
    keys = dict((channel, key) for key, channel in reversed(_keys(clean, "ok-1")))
    email_key, sms_key = keys["email"], keys["sms"]  # the first email: the confirmation
    notifier = EmailNotifier.from_env(
        {"SMTP_HOST": "127.0.0.1", "SMTP_SECURITY": "none", "SMTP_FROM": "shop@example.com"}
    )
    message_id = notifier._message_id(email_key)
    log = tmp_path / "prism.log"
    log.write_text(
        "[12:20:31 PM] \u203a     [HTTP SERVER] post /2010-04-01/Accounts/AC1/Messages.json "
        "\u2139  info      Request received\n"
        "[12:20:31 PM] \u203a     [NEGOTIATOR] \u2b24  debug     < Body: "
        "To=%2B15005550006&From=%2B15005550001&Body=Order+ref+ok-1+ships+today.\n"
        "[12:20:32 PM] \u203a     [NEGOTIATOR] \u2b24  debug     < Body: "
        "To=%2B15005550006&From=%2B15005550001&Body=Order+ref+nobody+ships+today.\n"
    )
    email = {"channel": "email", "ref": "ok-1", "message_id": message_id, "to": "x", "at": 1.0}
    # When the collector attributes them
    got = attribute([email, *prism_receipts(log)], clean.histories, clean.ledger)
    # Then each names the key it delivers, and the SMS nobody asked for names none
    assert [r["key"] for r in got] == [email_key, sms_key, None]
    assert [r["ref"] for r in got] == ["ok-1", "ok-1", "nobody"]
    assert got[2]["at"] - got[1]["at"] == 1.0


def test_notify_keys_are_the_ledger_keys_the_delivery_job_uses(clean: Snapshot) -> None:
    keys = notify_keys("ok-1", clean.histories["ok-1"])
    assert [(channel, to) for _, channel, to in keys] == [
        ("email", "ok-1+orders@example.com"),
        ("email", "ok-1@example.com"),
        ("sms", "+15005550006"),
    ]
    assert [k for k, _, _ in keys] == [r["key"] for r in clean.ledger["ok-1"]]


def _keys(snapshot: Snapshot, instance_id: str) -> list[tuple[str, str]]:
    return [(r["key"], r["channel"]) for r in snapshot.ledger[instance_id]]

"""Deadlines of whole instances, timeouts at a moment from the context, and events a
state ignores: the pure transition function (issue #15)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import ANY, On, State, Workflow
from orchestrator.core import events as ev
from orchestrator.core.effects import CancelTimers, RunTask, StartTimer
from orchestrator.core.errors import DefinitionError
from tests.core.test_machine import T0, Run, of_type
from tests.deadline_workflows import Appointment, Booking, Unrouted


def deadline_timer(run: Run) -> StartTimer:
    started = of_type(run.results[0].effects, StartTimer)
    (timer,) = [t for t in started if t.id.endswith("-deadline")]
    return timer


def test_start_arms_the_deadline_bound_to_no_state() -> None:
    run = Run(Booking)
    timer = deadline_timer(run)
    assert (timer.due, timer.event_type) == (T0 + 8, "workflow.deadline")
    assert "entered_seq" not in timer.data
    assert timer.id not in run.inst.timers  # entering and leaving states keep it
    run.ok()
    assert run.inst.state == "awaiting_payment"
    assert not any(timer.id in c.ids for r in run.results for c in of_type(r.effects, CancelTimers))


def test_a_deadline_routed_by_a_row_compensates_the_finished_steps() -> None:
    run = Run(Booking)
    run.ok()  # the seat is held: its release is due if the booking is undone
    result = run.fire_timer(deadline_timer(run))
    assert run.inst.status == "compensating"
    assert "the deadline passed" in result.note
    (undo,) = of_type(result.effects, RunTask)
    assert undo.kind == "compensation" and undo.task.endswith(":release")
    run.ok()
    assert (run.inst.state, run.inst.status) == ("expired", "failed")


def test_finishing_in_time_withdraws_the_deadline_and_a_late_one_changes_nothing() -> None:
    run = Run(Booking)
    timer = deadline_timer(run)
    run.ok()
    run.send("payment.received")
    result = run.send("confirm")
    assert run.inst.state == "confirmed"
    assert any(timer.id in c.ids for c in of_type(result.effects, CancelTimers))
    before = run.inst
    late = run.fire_timer(timer)
    assert late.outcome == "ignored" and run.inst.state == before.state
    assert late.effects == ()


def test_cancel_withdraws_the_deadline() -> None:
    run = Run(Unrouted)
    timer = deadline_timer(run)
    result = run.send(ev.CANCEL)
    assert run.inst.status == "cancelled"
    assert any(timer.id in c.ids for c in of_type(result.effects, CancelTimers))


def test_a_deadline_no_row_handles_fails_the_instance_for_good() -> None:
    run = Run(Unrouted)
    result = run.fire_timer(deadline_timer(run))
    assert (run.inst.status, result.outcome) == ("failed", "failed")
    assert run.inst.finished  # terminal: `retry` has nothing to resume
    assert "deadline of 1s passed in state 'waiting'" in (run.inst.reason or "")
    assert "no transition handles workflow.deadline" in (run.inst.reason or "")
    after = run.send("go")
    assert after.outcome == "ignored" and run.inst.status == "failed"
    assert run.send(ev.RESUME).outcome == "ignored"


def test_a_deadline_while_compensating_lets_the_undoing_go_on() -> None:
    run = Run(Booking)
    run.ok()
    run.send(ev.CANCEL)
    assert run.inst.status == "compensating"
    result = run.fire_timer(deadline_timer(run))
    assert run.inst.status == "compensating"
    assert "while compensating" in result.note
    run.ok()
    assert run.inst.status == "cancelled"


def test_a_state_ignores_its_listed_events_and_parks_others() -> None:
    run = Run(Booking)
    run.ok()
    run.send("payment.received")
    assert run.inst.state == "paid"
    ignored = run.send("payment.reminder")
    assert ignored.outcome == "ignored" and "paid ignores payment.reminder" in ignored.note
    assert run.inst.parked == ()
    parked = run.send("payment.received")  # not listed: parked as before
    assert parked.outcome == "parked"
    # in a state that does not list it, a listed type waits like any other
    early = Run(Booking)
    assert early.send("payment.reminder").outcome == "parked"


@pytest.mark.parametrize(
    ("starts_at", "due"),
    [
        (T0 + 600, T0 + 600),
        ("1970-01-01T00:26:40+00:00", 1600.0),
        ("1970-01-01T01:26:40+01:00", 1600.0),
        ("1970-01-01T00:26:40Z", 1600.0),
    ],
)
def test_timeout_at_arms_the_moment_from_the_context(starts_at: Any, due: float) -> None:
    run = Run(Appointment, {"starts_at": starts_at})
    (timer,) = of_type(run.last.effects, StartTimer)
    assert (timer.due, timer.event_type) == (due, "appointment.due")
    assert timer.id in run.inst.timers  # bound to the entry: leaving cancels it
    run.fire_timer(timer)
    assert run.inst.state == "reminded"


def test_leaving_before_the_moment_cancels_its_timer() -> None:
    run = Run(Appointment, {"starts_at": T0 + 600})
    (timer,) = of_type(run.last.effects, StartTimer)
    left = run.send("call.off")
    assert any(timer.id in c.ids for c in of_type(left.effects, CancelTimers))
    assert run.fire_timer(timer).outcome == "ignored"


@pytest.mark.parametrize(
    "starts_at",
    [None, "tomorrow", "2026-12-07T09:00:00", True, float("nan"), [1], 10**20, "x" * 100],
    ids=["missing", "text", "no-zone", "bool", "nan", "list", "huge", "long"],
)
def test_a_context_value_that_is_no_moment_arms_nothing_and_says_so(starts_at: Any) -> None:
    run = Run(Appointment, {} if starts_at is None else {"starts_at": starts_at})
    assert of_type(run.last.effects, StartTimer) == []
    assert "no timeout: context['starts_at'] is not a moment" in run.last.note
    assert run.inst.state == "waiting"


def test_the_same_events_give_the_same_instance() -> None:
    run = Run(Booking)
    run.ok()
    run.fire_timer(deadline_timer(run))
    run.ok()
    again = Run(Booking)
    again.ok()
    again.fire_timer(deadline_timer(again))
    again.ok()
    assert again.inst == run.inst


# ---- what the class may declare -------------------------------------------------


def workflow(**attrs: Any) -> type[Workflow]:
    states = {
        "a": attrs.pop("a", State(initial=True)),
        "b": State(final=True),
        "transitions": attrs.pop("transitions", [On("go", source="a", target="b")]),
    }
    return type("Declared", (Workflow,), {**states, **attrs})


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"deadline": 0}, "deadline must be a positive duration"),
        ({"deadline": "soon"}, "deadline must be a positive duration such as"),
        ({"deadline": True}, "deadline must be seconds"),
        ({"deadline": float("inf")}, "deadline must be a positive duration"),
        ({"deadline": 5, "deadline_event": ""}, "deadline_event must be an event type"),
        ({"deadline": 5, "deadline_event": "task.completed"}, "engine's own event types"),
        ({"a": State(initial=True, timeout=5, timeout_at="t")}, "timeout or timeout_at"),
        ({"a": State(initial=True, timeout_at="")}, "timeout_at must be a context key"),
        ({"a": State(initial=True, ignore="go")}, "ignore must be a list of event types"),
        ({"a": State(initial=True, ignore=["task.failed"])}, "engine's own event 'task.failed'"),
        ({"a": State(initial=True, ignore=["go"])}, "ignores 'go', but a transition on it"),
        (
            {
                "a": State(initial=True, ignore=["go"]),
                "transitions": [On("go", source=ANY, target="b")],
            },
            "ignores 'go', but a transition on it",
        ),
    ],
)
def test_bad_declarations_are_refused_naming_the_fault(attrs: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        workflow(**attrs)


def test_a_deadline_adds_its_event_to_the_types_the_workflow_takes() -> None:
    assert "workflow.deadline" in Booking.definition.event_types
    assert Booking.definition.deadline == 8.0
    assert workflow(deadline="2h", deadline_event="took.too.long").definition.event_types >= {
        "took.too.long"
    }
    assert workflow().definition.deadline is None
    assert "workflow.deadline" not in workflow().definition.event_types

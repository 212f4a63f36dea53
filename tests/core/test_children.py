"""Child workflows in the pure transition function (issue #15): an idempotent start, the
child's end answering the parent's step, parent-close policies, and a completed child
undone by its own compensations when the parent compensates past it."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Child, On, State, Workflow
from orchestrator.core import events as ev
from orchestrator.core.effects import AnswerParent, RunTask, SignalChild, StartChild
from orchestrator.core.errors import ConfigurationError, DefinitionError
from orchestrator.core.events import Event
from orchestrator.core.graph import dot, mermaid
from orchestrator.core.instance import Instance
from orchestrator.core.machine import transition
from orchestrator.runtime.registry import Registry
from tests.child_workflows import Drifting, Fleet, Parcel, Shipment
from tests.core.test_machine import T0, Run, of_type


def ok(run: Run, task: RunTask, result: Any = None) -> Any:
    kind = ev.COMPENSATION_COMPLETED if task.kind == "compensation" else ev.TASK_COMPLETED
    data = {"state": task.state, "attempt": task.attempt, "entered_seq": task.entered_seq}
    return run.send(kind, {**data, "result": result})


def start_child(start: StartChild) -> Run:
    """The child instance the applier creates for a StartChild, its start applied."""
    child = Run(Shipment, iid=start.child_id)
    # Run applies a plain start; redo it as the applier writes it, with the parent
    child.inst = Instance(id=start.child_id, workflow="shipment", version=1, created_at=T0)
    child.results = []
    data = {"input": start.input, "parent": start.parent}
    child.apply(Event(f"start-{start.child_id}", ev.STARTED, start.child_id, T0, data))
    return child


def deliver(run: Run, effect: AnswerParent | SignalChild) -> Any:
    run.at += 1
    to = effect.parent_id if isinstance(effect, AnswerParent) else effect.child_id
    assert to == run.inst.id
    event = Event(f"{effect.event_type}@{run.at}", effect.event_type, to, run.at, effect.data)
    return run.apply(event)


def finish_child(child: Run) -> AnswerParent:
    """Run the child's tasks to its end; the answer it sends its parent."""
    while True:
        (task,) = of_type(child.last.effects, RunTask)
        result = ok(child, task, {"tracking": "TRK-7"} if "dispatch" in task.task else None)
        answers = of_type(result.effects, AnswerParent)
        if answers:
            return answers[0]


def test_a_child_state_starts_one_child_with_a_derived_id_and_its_input() -> None:
    parent = Run(Parcel, {"order_id": 7, "address": "Paris", "secret": "x"})
    (charge,) = of_type(parent.last.effects, RunTask)
    before = parent.inst
    entered = ok(parent, charge)
    (start,) = of_type(entered.effects, StartChild)
    assert start.workflow == "shipment"
    assert start.child_id == f"{parent.inst.id}-{parent.inst.entered_seq}-shipping"
    assert start.input == {"order_id": 7, "address": "Paris"}  # the keys it lists, if present
    assert start.parent["instance"] == parent.inst.id and start.parent["kind"] == "task"
    assert parent.inst.children == {"shipping": start.child_id}
    # the same event applied again to the same instance starts the very same child id
    data = {"state": "charging", "attempt": 1, "entered_seq": 1, "result": None}
    event = Event("again", ev.TASK_COMPLETED, before.id, parent.at, data)
    (again,) = of_type(transition(Parcel.definition, before, event).effects, StartChild)
    assert again.child_id == start.child_id


def test_the_childs_end_answers_the_parent_which_routes_it() -> None:
    parent = Run(Parcel, {"order_id": 7, "address": "Paris"})
    (start,) = of_type(ok(parent, of_type(parent.last.effects, RunTask)[0]).effects, StartChild)
    child = start_child(start)
    assert child.inst.parent is not None and child.inst.parent["instance"] == parent.inst.id
    answer = finish_child(child)
    assert child.inst.state == "delivered" and child.inst.compensations == ("packing",)
    assert answer.event_type == ev.TASK_COMPLETED and answer.data["result"] == "TRK-7"
    deliver(parent, answer)
    assert parent.inst.state == "checking" and parent.inst.context["shipping"] == "TRK-7"


def test_a_failed_child_reaches_the_parent_as_a_routable_failure() -> None:
    parent = Run(Parcel, {"order_id": 7, "address": "nowhere"})
    (start,) = of_type(ok(parent, of_type(parent.last.effects, RunTask)[0]).effects, StartChild)
    child = start_child(start)
    ok(child, of_type(child.last.effects, RunTask)[0])  # packed
    (dispatching,) = of_type(child.last.effects, RunTask)
    data = {"state": dispatching.state, "attempt": 1, "entered_seq": dispatching.entered_seq}
    failed = child.send(ev.TASK_FAILED, {**data, "error_type": "NonRetryable", "retryable": False})
    (unpack,) = of_type(failed.effects, RunTask)  # the child undoes its own packing
    (answer,) = of_type(ok(child, unpack).effects, AnswerParent)
    assert answer.event_type == ev.TASK_FAILED and answer.data["error_type"] == "ChildFailed"
    assert "ended failed in state lost" in answer.data["message"]
    routed = deliver(parent, answer)
    assert parent.inst.status == "compensating"  # error="ChildFailed" routed it
    (refund,) = of_type(routed.effects, RunTask)
    assert refund.task.endswith(":refund")  # the child is not undone: it did not complete


def test_a_parent_cancelled_while_its_child_runs_cancels_it_and_waits() -> None:
    parent = Run(Parcel, {"order_id": 7})
    (start,) = of_type(ok(parent, of_type(parent.last.effects, RunTask)[0]).effects, StartChild)
    child = start_child(start)
    ok(child, of_type(child.last.effects, RunTask)[0])  # packed: its unpacking is due
    cancelled = parent.send(ev.CANCEL, {"reason": "customer"})
    (signal,) = of_type(cancelled.effects, SignalChild)
    assert (signal.child_id, signal.event_type) == (start.child_id, ev.CANCEL)
    assert parent.inst.status == "compensating" and "shipping" in cancelled.note
    undoing = deliver(child, signal)
    (unpack,) = of_type(undoing.effects, RunTask)
    (answer,) = of_type(ok(child, unpack).effects, AnswerParent)
    assert child.inst.status == "cancelled" and unpack.task.endswith(":unpack")
    assert answer.data["error_type"] == "ChildCancelled"
    late = deliver(parent, answer)
    assert late.outcome == "late"
    (refund,) = of_type(late.effects, RunTask)
    ok(parent, refund)
    assert parent.inst.status == "cancelled"


def test_compensating_past_a_completed_child_undoes_its_own_steps() -> None:
    parent = Run(Parcel, {"order_id": 7, "fraud": True})
    (start,) = of_type(ok(parent, of_type(parent.last.effects, RunTask)[0]).effects, StartChild)
    child = start_child(start)
    deliver(parent, finish_child(child))
    (check,) = of_type(parent.last.effects, RunTask)
    data = {"state": "checking", "attempt": 1, "entered_seq": check.entered_seq}
    failed = parent.send(ev.TASK_FAILED, {**data, "error_type": "NonRetryable", "retryable": False})
    (undo,) = of_type(failed.effects, SignalChild)
    assert (undo.child_id, undo.event_type) == (start.child_id, ev.UNDO)
    undoing = deliver(child, undo)
    assert child.inst.status == "compensating"
    (unpack,) = of_type(undoing.effects, RunTask)
    (answer,) = of_type(ok(child, unpack).effects, AnswerParent)
    assert child.inst.status == "cancelled" and "undone: its parent" in (child.inst.reason or "")
    assert answer.event_type == ev.COMPENSATION_COMPLETED
    resumed = deliver(parent, answer)
    (refund,) = of_type(resumed.effects, RunTask)
    assert refund.task.endswith(":refund")  # then the charge, older
    ok(parent, refund)
    assert (parent.inst.state, parent.inst.status) == ("failed", "failed")
    # a second undo (a redelivered signal) answers again and changes nothing
    again = deliver(child, undo)
    assert of_type(again.effects, AnswerParent) and child.inst.status == "cancelled"


def test_an_abandoned_child_is_not_cancelled_with_its_parent() -> None:
    parent = Run(Drifting, {})
    (start,) = of_type(parent.last.effects, StartChild)
    cancelled = parent.send(ev.CANCEL)
    assert parent.inst.status == "cancelled" and of_type(cancelled.effects, SignalChild) == []
    child = start_child(start)
    answer = finish_child(child)
    late = deliver(parent, answer)
    assert late.outcome == "ignored" and parent.inst.status == "cancelled"


def test_a_map_of_children_starts_one_per_item_and_gathers_their_outputs() -> None:
    parent = Run(Fleet, {"parcels": ["a", "b", "c"]})
    starts = of_type(parent.last.effects, StartChild)
    assert [s.input["item"] for s in starts] == ["a", "b"]  # two at once
    assert len({s.child_id for s in starts}) == 2
    answers = []
    for start in starts:
        answers.append(finish_child(start_child(start)))
    third = deliver(parent, answers[1])
    (start_c,) = of_type(third.effects, StartChild)
    deliver(parent, answers[0])
    deliver(parent, finish_child(start_child(start_c)))
    assert parent.inst.state == "done"
    assert parent.inst.context["shipping"] == ["TRK-7", "TRK-7", "TRK-7"]
    assert set(parent.inst.children) == {"shipping/0", "shipping/1", "shipping/2"}


def test_child_declarations_are_checked() -> None:
    with pytest.raises(DefinitionError, match="Child input must list context keys"):

        class BadInput(Workflow):
            name = "bad_input"
            s = State(initial=True, child=Child("shipment", input=[1]))  # type: ignore[list-item]
            done = State(final=True)
            transitions = [On("task.completed", source=s, target=done)]

    with pytest.raises(DefinitionError, match="runs its child workflow instead of a task"):

        class Both(Workflow):
            name = "both"
            s = State(initial=True, child=Child("shipment"), task=print)
            done = State(final=True)
            transitions = [On("task.completed", source=s, target=done)]

    with pytest.raises(ConfigurationError, match="starts child workflow 'shipment', which is not"):
        Registry([Parcel])
    Registry([Parcel, Shipment])  # with its child loaded: fine


def test_graphs_draw_child_states_and_maps_of_children() -> None:
    drawn = mermaid(Parcel.definition)
    assert "shipping : shipping<br/>child shipment (cancel on close)" in drawn
    assert "undo shipment" not in drawn
    assert "map child shipment over parcels" in dot(Fleet.definition)

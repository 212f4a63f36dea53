"""Published events in the pure transition function: when a step publishes, what it
builds, what a class may declare, and the engine's lifecycle events (issue #17)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import ANY, On, Publish, State, Workflow
from orchestrator.core import events as ev
from orchestrator.core.effects import PublishEvent, RunTask
from orchestrator.core.errors import DefinitionError
from orchestrator.core.publishing import lifecycle
from orchestrator.core.step import GuardFailed
from tests.core.test_machine import T0, Run, fresh, make_event, of_type


class Shape:  # stands in for a schema: the core never reads it
    pass


def explode(context: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("no such field")


def work(context: dict[str, Any]) -> None:
    return None


def undo(context: dict[str, Any]) -> None:
    return None


class Shop(Workflow):
    publishes = [
        Publish("shop.opened", Shape, data=["sale_id"]),
        Publish("shop.moved", Shape, data=lambda ctx: {"n": ctx.get("n", 0) + 1}, version=3),
        Publish("shop.closed", Shape),
        Publish("shop.broken", Shape, data=explode),
    ]
    open = State(initial=True, publish=["shop.opened"])
    hop = State()  # passed through: a parked event moves it on at once
    busy = State(task=work, compensation=undo, publish=["shop.closed"])
    closed = State(final=True, publish=["shop.closed"])
    broken = State(final=True, outcome="failed")
    transitions = [
        On("go", source=open, target=hop, publish=["shop.moved"]),
        On("jump", source=hop, target=closed),
        On("work", source=open, target=busy),
        On("task.completed", source=busy, target=closed),
        On("break", source=ANY, target=broken, publish=["shop.broken"]),
        On("task.failed", source=busy, target=broken, compensate=True),
    ]


class Halting(Workflow):
    publishes = [Publish("halt.entered", Shape, data=[])]
    working = State(initial=True, task=work, publish=["halt.entered"])
    done = State(final=True)
    transitions = [On("task.completed", source=working, target=done)]


class Saga(Workflow):
    paying = State(initial=True, task=work, compensation=undo)
    shipping = State(task=work)
    done = State(final=True)
    undone = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=paying, target=shipping),
        On("task.completed", source=shipping, target=done),
        On("task.failed", source=shipping, target=undone, compensate=True),
    ]


def published(run: Run) -> list[tuple[str, dict[str, Any], int]]:
    return [
        (p.type, p.data, p.version) for r in run.results for p in of_type(r.effects, PublishEvent)
    ]


def test_entering_a_state_and_firing_a_row_publish_with_the_data_they_build() -> None:
    run = Run(Shop, {"sale_id": "S1", "n": 4, "secret": "x"})
    assert published(run) == [("shop.opened", {"sale_id": "S1"}, 1)]
    (opened,) = of_type(run.last.effects, PublishEvent)
    assert opened.at == T0  # the time of the event that caused it: the same if applied again
    run.send("go")
    # the row's event first, then the states entered; None data: the whole context
    assert published(run)[1:] == [("shop.moved", {"n": 5}, 3)]
    run.send("jump")
    assert published(run)[2] == ("shop.closed", {"sale_id": "S1", "n": 4, "secret": "x"}, 1)


def test_a_state_passed_through_publishes_and_an_entry_resumed_does_not() -> None:
    run = Run(Shop, {"sale_id": "S2"})
    run.send("jump")  # parked: no row from open
    run.send("go")  # open -> hop, and the parked jump moves it on to closed at once
    assert run.inst.state == "closed"
    assert [t for t, _, _ in published(run)] == ["shop.opened", "shop.moved", "shop.closed"]
    halted = Run(Halting, {"sale_id": "S3"})
    halted.fail()  # no row takes the failure: the instance halts in its state
    assert halted.inst.status == "failed"
    halted.send(ev.RESUME)  # `retry` runs the task again: the state is not entered anew
    assert halted.inst.status == "running" and of_type(halted.last.effects, RunTask)
    assert [t for t, _, _ in published(halted)] == ["halt.entered"]


def test_a_data_function_that_raises_stops_the_event_as_a_guard_does() -> None:
    run = Run(Shop, {"sale_id": "S4"})
    with pytest.raises(GuardFailed, match=r"published event shop\.broken raised ValueError"):
        run.send("break")


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"publishes": [Publish("Order.Shipped", Shape)]}, "dotted lowercase words"),
        ({"publishes": [Publish("shipped", Shape)]}, "dotted lowercase words"),
        ({"publishes": [Publish("orchestrator.x", Shape)]}, "is the engine's"),
        ({"publishes": [Publish("a.b", Shape), Publish("a.b", Shape)]}, "declared twice"),
        ({"publishes": [Publish("a.b", None)]}, "needs a schema"),
        ({"publishes": [Publish("a.b", Shape, version=0)]}, "version must be 1 or more"),
        ({"publishes": [Publish("a.b", Shape, data="key")]}, "data must list context keys"),
        ({"publishes": Publish("a.b", Shape)}, "publishes must be a list"),
        ({"publishes": ["a.b"]}, "must be Publish"),
        ({"publishes": [], "start": State(initial=True, publish=["a.b"])}, "does not declare"),
        (
            {"publishes": [Publish("a.b", Shape)], "start": State(initial=True, publish="a.b")},
            "publish must be a list",
        ),
    ],
)
def test_what_a_class_may_not_declare(attrs: dict[str, Any], message: str) -> None:
    body: dict[str, Any] = {"start": State(initial=True), "end": State(final=True)}
    body.update(attrs)
    body["transitions"] = [On("go", source=body["start"], target=body["end"])]
    with pytest.raises(DefinitionError, match=message):
        type("Bad", (Workflow,), body)


def test_a_row_naming_an_undeclared_type_is_refused() -> None:
    start, end = State(initial=True), State(final=True)
    with pytest.raises(DefinitionError, match=r"transition on 'go'.*publishes 'x\.y'"):
        type(
            "BadRow",
            (Workflow,),
            {"start": start, "end": end, "transitions": [On("go", start, end, publish=["x.y"])]},
        )


def test_lifecycle_events_say_started_transitioned_compensated_and_finished() -> None:
    run = Run(Saga)
    start = make_event(ev.STARTED, T0)
    assert [e.type for e in lifecycle(fresh(Saga), run.inst, start)] == [
        "orchestrator.workflow.started"
    ]
    before = run.inst
    run.ok()
    (moved,) = lifecycle(before, run.inst, make_event(ev.TASK_COMPLETED, run.at))
    assert (moved.type, moved.data["from"], moved.data["to"]) == (
        "orchestrator.workflow.transitioned",
        "paying",
        "shipping",
    )
    run.fail()
    assert run.inst.status == "compensating" and of_type(run.last.effects, RunTask)
    before = run.inst
    run.ok()
    found = lifecycle(before, run.inst, make_event("compensation.completed", run.at))
    assert [e.type for e in found] == [
        "orchestrator.workflow.transitioned",
        "orchestrator.workflow.compensated",
        "orchestrator.workflow.failed",
    ]
    assert found[-1].data == {"workflow": Saga.definition.name, "version": 1, "state": "undone"}
    note = make_event("notification.delivered", run.at, {"key": "k", "channel": "sms", "to": "+1"})
    (delivered,) = lifecycle(run.inst, run.inst, note)
    assert delivered.type == "orchestrator.notification.delivered"
    assert "to" not in delivered.data  # an address is not published

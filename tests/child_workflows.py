"""Parent and child workflows (issue #15), for the pure tests and the end-to-end one."""

from __future__ import annotations

import time
from typing import Any

from orchestrator import ANY, Child, Map, NonRetryable, On, State, Task, Workflow


def pack(context: dict[str, Any]) -> dict[str, Any]:
    time.sleep(float(context.get("pack_seconds", 0)))
    return {"packed": True}


def unpack(context: dict[str, Any]) -> dict[str, Any]:
    return {"unpacked": True}


def dispatch(context: dict[str, Any]) -> dict[str, Any]:
    time.sleep(float(context.get("dispatch_seconds", 0)))
    if context.get("address") == "nowhere":
        raise NonRetryable("no carrier goes nowhere")
    return {"tracking": f"TRK-{context.get('order_id', context.get('item'))}"}


def charge(context: dict[str, Any]) -> dict[str, Any]:
    return {"charged": True}


def refund(context: dict[str, Any]) -> dict[str, Any]:
    return {"refunded": True}


def check_fraud(context: dict[str, Any]) -> None:
    if context.get("fraud"):
        raise NonRetryable("fraud suspected")


class Shipment(Workflow):
    """The child: pack (undone by unpacking), then dispatch to the address."""

    name = "shipment"
    packing = State(initial=True, task=pack, compensation=unpack)
    dispatching = State(task=Task(dispatch, timeout=30))
    delivered = State(final=True)
    lost = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=packing, target=dispatching),
        On("task.completed", source=dispatching, target=delivered),
        On("task.failed", source=ANY, target=lost, compensate=True),
    ]


class Parcel(Workflow):
    """The parent: charge, ship as a child workflow, then a fraud check that may undo
    both (the completed shipment undone by its own steps)."""

    name = "parcel"
    charging = State(initial=True, task=charge, compensation=refund)
    shipping = State(
        child=Child(
            "shipment",
            input=["order_id", "address", "pack_seconds", "dispatch_seconds"],
            output="tracking",
        )
    )
    checking = State(task=check_fraud)
    done = State(final=True)
    failed = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=charging, target=shipping),
        On("task.completed", source=shipping, target=checking),
        On("task.failed", source=shipping, target=failed, compensate=True, error="ChildFailed"),
        On("task.completed", source=checking, target=done),
        On("task.failed", source=checking, target=failed, compensate=True),
    ]


class Drifting(Workflow):
    """A parent whose running child is abandoned, not cancelled, when it is cancelled."""

    name = "drifting"
    shipping = State(initial=True, child=Child("shipment", parent_close="abandon"))
    done = State(final=True)
    transitions = [On("task.completed", source=shipping, target=done)]


class Fleet(Workflow):
    """A map of children: one shipment per parcel, two at once."""

    name = "fleet"
    shipping = State(
        initial=True,
        map=Map(Child("shipment", output="tracking"), items="parcels", max_concurrency=2),
    )
    done = State(final=True)
    failed = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=shipping, target=done),
        On("task.failed", source=shipping, target=failed, compensate=True),
    ]

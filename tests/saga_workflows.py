"""Workflows for tests/e2e/test_saga_semantics.py: steps that log what they really did.

Every task appends a line to the file named by the context's `log`, when it
returns (so a line means the step was done), which is what the tests compare
with the history.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from orchestrator import On, State, Workflow


def _log(ctx: dict[str, Any], line: str) -> None:
    with Path(ctx["log"]).open("a") as log:
        log.write(line + "\n")


def book_flight(ctx: dict[str, Any]) -> dict[str, Any]:
    _log(ctx, "book_flight")
    return {"flight": "F-1"}


def cancel_flight(ctx: dict[str, Any]) -> None:
    _log(ctx, "cancel_flight")


def reserve_car(ctx: dict[str, Any]) -> dict[str, Any]:
    time.sleep(float(ctx.get("car_seconds", 0)))
    _log(ctx, "reserve_car")
    return {"car": "C-1"}


def cancel_car(ctx: dict[str, Any]) -> None:
    assert ctx["car"] == "C-1", "the late reservation's result is in the context"
    _log(ctx, "cancel_car")


def refund_once_killed(ctx: dict[str, Any]) -> None:
    """A compensation whose first try is killed with its worker: it writes its pid and waits."""
    marker = Path(ctx["marker"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(60)
    _log(ctx, "refund")


def charge(ctx: dict[str, Any]) -> dict[str, Any]:
    _log(ctx, "charge")
    return {"charged": 10}


def ship(ctx: dict[str, Any]) -> None:
    raise RuntimeError("the carrier refused the parcel")


def pack(ctx: dict[str, Any]) -> None:
    """Fails until the file named by `fixed` exists."""
    if not Path(ctx["fixed"]).exists():
        raise ConnectionError("the packing line is down")
    _log(ctx, "pack")


class Trip(Workflow):
    """Book a flight, then a car (slow); cancel may come while the car is being reserved."""

    name = "trip"
    flight = State(initial=True, task=book_flight, compensation=cancel_flight)
    car = State(task=reserve_car, compensation=cancel_car)
    booked = State(final=True)
    transitions = [
        On("task.completed", source=flight, target=car),
        On("task.completed", source=car, target=booked),
    ]


class KilledRefund(Workflow):
    """A charge undone by a compensation given as a bare function, whose worker is killed."""

    name = "killed_refund"
    charging = State(initial=True, task=charge, compensation=refund_once_killed)
    shipping = State(task=ship)
    shipped = State(final=True)
    failed = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=charging, target=shipping),
        On("task.completed", source=shipping, target=shipped),
        On("task.failed", source=shipping, target=failed, compensate=True),
    ]


class Unhandled(Workflow):
    """A task whose failure no row handles."""

    name = "unhandled"
    packing = State(initial=True, task=pack)
    packed = State(final=True)
    transitions = [On("task.completed", source=packing, target=packed)]

"""Workflows with parallel branches and maps (issue #15), for the pure tests and the
end-to-end ones. Each task records what it did in the context it returns; the
end-to-end tests read the instance's history for what ran and what was undone."""

from __future__ import annotations

import time
from typing import Any

from orchestrator import Branch, Map, NonRetryable, On, State, Task, Workflow


def charge(context: dict[str, Any]) -> dict[str, Any]:
    time.sleep(float(context.get("charge_seconds", 0)))
    return {"charged": True}


def refund(context: dict[str, Any]) -> dict[str, Any]:
    return {"refunded": True}


def reserve(context: dict[str, Any]) -> dict[str, Any]:
    time.sleep(float(context.get("reserve_seconds", 0)))
    if context.get("out_of_stock"):
        raise NonRetryable("out of stock")
    return {"reserved": True}


def release(context: dict[str, Any]) -> dict[str, Any]:
    return {"released": True}


def label(context: dict[str, Any]) -> str:
    return "label-1"


def double(context: dict[str, Any]) -> int:
    """A map item's task: its item times two; an item listed in `bad` fails for good."""
    item = context["item"]
    if item in context.get("bad", ()):
        raise NonRetryable(f"item {item} is bad")
    return int(item) * 2


def undo_double(context: dict[str, Any]) -> None:
    return None


class Checkout(Workflow):
    """Charge the card and reserve the stock at once; continue when both are done. If
    either fails for good, the one that completed is undone and the checkout fails."""

    name = "checkout"
    preparing = State(
        initial=True,
        parallel={
            "charge": Branch(Task(charge, retries=1, backoff=0.1), compensation=refund),
            "reserve": Branch(reserve, compensation=release),
            "label": label,  # a branch with no compensation
        },
    )
    done = State(final=True)
    failed = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=preparing, target=done),
        On("task.failed", source=preparing, target=failed, compensate=True),
    ]


class PatientCheckout(Checkout):
    """The same, but a failed branch waits for the others before the state fails."""

    name = "patient_checkout"
    preparing = State(
        initial=True,
        on_failure="wait_all",
        parallel={
            "charge": Branch(charge, compensation=refund),
            "reserve": Branch(reserve, compensation=release),
        },
    )
    done = State(final=True)
    failed = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=preparing, target=done),
        On("task.failed", source=preparing, target=failed, compensate=True),
    ]


class Unhandled(Workflow):
    """A parallel state whose failure no row handles: the instance halts (`retry`)."""

    name = "unhandled_parallel"
    preparing = State(
        initial=True,
        parallel={"charge": Branch(charge, compensation=refund), "reserve": reserve},
    )
    done = State(final=True)
    transitions = [On("task.completed", source=preparing, target=done)]


class Doubling(Workflow):
    """Doubles each number of `items`, 3 at once, tolerating 5 bad items; each doubled
    item is undone if the run is cancelled."""

    name = "doubling"
    doubling = State(
        initial=True,
        map=Map(
            Task(double, retries=1, backoff=0.1),
            items="items",
            results="doubled",
            compensation=undo_double,
            max_concurrency=3,
            tolerated_failures=5,
        ),
    )
    done = State(final=True)
    failed = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=doubling, target=done),
        On("task.failed", source=doubling, target=failed, compensate=True),
        On("abort", source=doubling, target=failed, compensate=True),
    ]


class WideDoubling(Workflow):
    """Doubles up to 10,000 items, 100 at once, with 5 bad ones tolerated (the bench)."""

    name = "wide_doubling"
    doubling = State(
        initial=True,
        map=Map(
            double, items="items", results="doubled", max_concurrency=100, tolerated_failures=5
        ),
    )
    done = State(final=True)
    failed = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=doubling, target=done),
        On("task.failed", source=doubling, target=failed),
    ]

"""Workflows for tests/e2e/test_failure_visible.py and tests/entry/test_worker_stop.py: a task
that fails where a user should see it, and a chain of steps slow enough to stop a worker
in the middle of them."""

from __future__ import annotations

import logging
import time
from typing import Any

from orchestrator import On, State, Task, Workflow, task_info

log = logging.getLogger("tests.visible_workflows")


class InventoryError(Exception):
    """What the failing task raises."""


def _look_up(item: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}  # a secret in a local: never shown
    if headers:
        raise InventoryError(f"item {item} is not in stock")


def check_stock(ctx: dict[str, Any]) -> dict[str, Any]:
    """Logs a line, then fails (always): a retryable error, tried twice."""
    log.warning("checking stock of %s", ctx["item"])
    _look_up(ctx["item"], ctx["token"])
    return {}


class VisibleFailure(Workflow):
    """A task that fails on both of its tries; the instance ends failed."""

    name = "visible_failure"
    checking = State(initial=True, task=Task(check_stock, retries=1, backoff=0.01))
    in_stock = State(final=True)
    out_of_stock = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=checking, target=in_stock),
        On("task.failed", source=checking, target=out_of_stock),
    ]


def work(ctx: dict[str, Any]) -> dict[str, Any]:
    """Sleeps `seconds` (from the context), or `first_seconds` on the first step's first
    try (a try long enough to be in flight when its worker is stopped); counts its step."""
    info = task_info()
    first = info.state == "one" and info.attempt == 1 and "first_seconds" in ctx
    time.sleep(float(ctx["first_seconds"] if first else ctx.get("seconds", 0.3)))
    return {"steps": int(ctx.get("steps", 0)) + 1}


class SlowChain(Workflow):
    """Three slow steps, each retried once: work for a worker to be stopped in."""

    name = "slow_chain"
    one = State(initial=True, task=Task(work, retries=1, backoff=0.01))
    two = State(task=Task(work, retries=1, backoff=0.01))
    three = State(task=Task(work, retries=1, backoff=0.01))
    done = State(final=True)
    broken = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=one, target=two),
        On("task.completed", source=two, target=three),
        On("task.completed", source=three, target=done),
        On("task.failed", source=[one, two, three], target=broken),
    ]

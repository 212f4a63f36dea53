"""Small workflows the tests drive; their tasks leave traces in files named by the context."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

from orchestrator import ANY, On, State, Task, Workflow


def _trace(ctx: dict[str, Any], line: str) -> None:
    if ctx.get("trace"):
        with open(ctx["trace"], "a") as handle:
            handle.write(line + "\n")


def step(ctx: dict[str, Any]) -> dict[str, Any]:
    name = f"step{len(ctx.get('done', [])) + 1}"
    _trace(ctx, f"do {name}")
    if ctx.get("fail_at") == name:
        raise RuntimeError(f"{name} failed on purpose")
    return {"done": [*ctx.get("done", []), name]}


def undo(ctx: dict[str, Any]) -> None:
    _trace(ctx, "undo")


def undo_fails(ctx: dict[str, Any]) -> None:
    """Fails until the file named by `fixed` exists (an operator fixing the cause)."""
    if ctx.get("fixed") and Path(ctx["fixed"]).exists():
        return
    raise RuntimeError("cannot undo")


def step_unless_broken(ctx: dict[str, Any]) -> dict[str, Any]:
    if ctx.get("fixed") and not Path(ctx["fixed"]).exists():
        raise RuntimeError("broken until fixed")
    return {"ran": True}


def flaky(ctx: dict[str, Any]) -> dict[str, Any]:
    """Fails until it has been called `fail_times` times (counted in a file)."""
    counter = Path(ctx["counter"])
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if calls <= int(ctx.get("fail_times", 0)):
        raise ConnectionError(f"call {calls} failed")
    return {"calls": calls}


def slow(ctx: dict[str, Any]) -> None:
    time.sleep(float(ctx.get("seconds", 5)))


def big_enough(ctx: dict[str, Any], data: dict[str, Any]) -> bool:
    return float(data.get("amount", 0)) >= float(ctx.get("minimum", 0))


def explodes(ctx: dict[str, Any], data: dict[str, Any]) -> bool:
    raise ValueError("guard exploded")


class Counter(Workflow):
    """Counts ticks; for ordering and idempotency tests."""

    name = "counter"
    counting = State(initial=True)
    done = State(final=True)
    transitions = [
        On("tick", source=counting, target=counting),
        On("finish", source=counting, target=done),
    ]


class Saga(Workflow):
    """Three compensated steps, then a fourth that may fail."""

    name = "saga"
    one = State(initial=True, task=step, compensation=undo)
    two = State(task=step, compensation=undo)
    three = State(task=step, compensation=undo)
    four = State(task=step)
    finished = State(final=True)
    undone = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=one, target=two),
        On("task.completed", source=two, target=three),
        On("task.completed", source=three, target=four),
        On("task.completed", source=four, target=finished),
        On("task.failed", source=ANY, target=undone, compensate=True),
    ]


class ApproveData(TypedDict):
    amount: float


class Approval(Workflow):
    """Waits for an approval (guarded), then a payment; expires if nobody approves."""

    name = "approval"
    schemas = {"approve": ApproveData}
    correlate_by = "request_id"
    starts_on = ["request.opened"]
    waiting = State(initial=True, timeout=60, timeout_event="approval.expired")
    approved = State()
    paid = State(final=True)
    expired = State(final=True, outcome="failed")
    transitions = [
        On("approve", source=waiting, target=approved, guard=big_enough),
        On("pay", source=approved, target=paid),
        On("approval.expired", source=waiting, target=expired),
    ]


class Retrying(Workflow):
    """One flaky task with retries."""

    name = "retrying"
    trying = State(initial=True, task=Task(flaky, retries=2, backoff=0.05))
    ok = State(final=True)
    gave_up = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=trying, target=ok),
        On("task.failed", source=trying, target=gave_up),
    ]


class Sleepy(Workflow):
    """A task slower than its state's timeout, and a task slower than its own timeout."""

    name = "sleepy"
    working = State(initial=True, task=Task(slow, timeout=1), timeout=0.5)
    late = State(final=True, outcome="failed")
    on_time = State(final=True)
    transitions = [
        On("state.timeout", source=working, target=late),
        On("task.completed", source=working, target=on_time),
        On("task.failed", source=working, target=late),
    ]


class Guarded(Workflow):
    """A guard that raises: its events are dead-lettered."""

    name = "guarded"
    start = State(initial=True)
    end = State(final=True)
    transitions = [On("go", source=start, target=end, guard=explodes)]


class BadCompensation(Workflow):
    """Its compensation always fails: the instance ends `failed` with the reason."""

    name = "bad_compensation"
    one = State(initial=True, task=step, compensation=Task(undo_fails, retries=1, backoff=0.01))
    two = State(task=step)
    done = State(final=True)
    undone = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=one, target=two),
        On("task.completed", source=two, target=done),
        On("task.failed", source=two, target=undone, compensate=True),
    ]


def dies_once(ctx: dict[str, Any]) -> dict[str, Any]:
    """Kills its own process (the RQ work-horse) on the first call, as the OOM killer would."""
    marker = Path(ctx["marker"])
    if not marker.exists():
        marker.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return {"survived": True}


def sleeps_once(ctx: dict[str, Any]) -> dict[str, Any]:
    """Sleeps long on the first call (so its worker can be killed meanwhile), not after."""
    marker = Path(ctx["marker2"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(60)
    return {"survived": True}


class Fragile(Workflow):
    """A task whose process dies under it; the engine must notice and retry."""

    name = "fragile"
    working = State(
        initial=True, task=Task("tests.sample_workflows:dies_once", retries=1, backoff=0.1)
    )
    sleeping = State(task=Task(sleeps_once, retries=1, backoff=0.1))
    done = State(final=True)
    broken = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=working, target=sleeping),
        On("task.completed", source=sleeping, target=done),
        On("task.failed", source=[working, sleeping], target=broken),
    ]


def ignores_its_timeout_once(ctx: dict[str, Any]) -> dict[str, Any]:
    """On the first call, swallows the timeout and keeps running (as a stuck C call would)."""
    marker = Path(ctx["marker"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        until = time.monotonic() + 120
        while time.monotonic() < until:
            with contextlib.suppress(BaseException):  # the misbehaviour under test
                time.sleep(0.2)
    return {"survived": True}


class Stubborn(Workflow):
    """A task that outlives its deadline: its process must be ended for it."""

    name = "stubborn"
    working = State(initial=True, task=Task(ignores_its_timeout_once, timeout=1, retries=1))
    done = State(final=True)
    broken = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=working, target=done),
        On("task.failed", source=working, target=broken),
    ]


class Stuck(Workflow):
    """A task failure with no transition for it: the instance waits for `retry`."""

    name = "stuck"
    working = State(initial=True, task=step_unless_broken)
    done = State(final=True)
    transitions = [On("task.completed", source=working, target=done)]


class VersionedV1(Workflow):
    name = "versioned"
    version = 1
    first = State(initial=True)
    old_end = State(final=True)
    transitions = [On("go", source=first, target=old_end)]


class VersionedV2(Workflow):
    name = "versioned"
    version = 2
    first = State(initial=True)
    middle = State()
    new_end = State(final=True)
    transitions = [On("go", source=first, target=middle), On("go", source=middle, target=new_end)]


class TimeBoxed(Workflow):
    """A task slower than its own per-try timeout: each try is cut off, then it fails."""

    name = "time_boxed"
    working = State(initial=True, task=Task(slow, timeout=1, retries=1, backoff=0.05))
    done = State(final=True)
    gave_up = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=working, target=done),
        On("task.failed", source=working, target=gave_up),
    ]


class TwoSteps(Workflow):
    """Two steps that a lost try does not sink: each may be tried three times."""

    name = "two_steps"
    one = State(initial=True, task=Task(step, retries=2, backoff=0.1))
    two = State(task=Task(step, retries=2, backoff=0.1))
    done = State(final=True)
    transitions = [
        On("task.completed", source=one, target=two),
        On("task.completed", source=two, target=done),
    ]

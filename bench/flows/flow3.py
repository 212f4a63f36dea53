"""The engine's side: a workflow of three task states, then a final one.

Loaded by the worker processes through ORCHESTRATOR_WORKFLOWS=bench.flows.flow3.
Each task is a no-op but the last, which records the finish time (steps.py),
through the job's own Redis connection so that the forked work-horse opens no
second connection for it.
"""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from bench.flows import steps
from orchestrator import On, State, Task, Workflow

NAME = "bench3"


def one(ctx: dict[str, Any]) -> None:
    steps.noop(ctx["wf"])


def two(ctx: dict[str, Any]) -> None:
    steps.noop(ctx["wf"])


def three(ctx: dict[str, Any]) -> None:
    job = get_current_job()
    steps.finish(ctx["wf"], job.connection if job is not None else None)


class ThreeSteps(Workflow):
    name = NAME
    first = State(initial=True, task=Task(one, timeout=30))
    second = State(task=Task(two, timeout=30))
    third = State(task=Task(three, timeout=30))
    done = State(final=True)
    transitions = [
        On("task.completed", source=first, target=second),
        On("task.completed", source=second, target=third),
        On("task.completed", source=third, target=done),
    ]

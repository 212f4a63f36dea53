"""The workflow whose finished instances the memory and scale workloads store.

Three task states, then a final one: a finished instance has run the start
event and three `task.completed` answers, so its history holds four entries.
The tasks do nothing and return nothing, so what Redis keeps is the engine's
own bookkeeping, not a payload of ours.
"""

from __future__ import annotations

from typing import Any

from orchestrator import On, State, Workflow

NAME = "three_steps"


def step(ctx: dict[str, Any]) -> None:
    """Every step: nothing at all."""


class ThreeSteps(Workflow):
    name = NAME
    one = State(initial=True, task=step)
    two = State(task=step)
    three = State(task=step)
    done = State(final=True)
    transitions = [
        On("task.completed", source=one, target=two),
        On("task.completed", source=two, target=three),
        On("task.completed", source=three, target=done),
    ]

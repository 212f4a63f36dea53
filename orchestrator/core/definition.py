"""The definition language in one import: a workflow is a class whose attributes
are states and whose `transitions` read like a table.

    class Order(Workflow):
        name = "order"
        reserving = State(initial=True, task=reserve, compensation=release)
        shipped = State(final=True)
        transitions = [On("task.completed", source=reserving, target=shipped)]

It lives in three modules, one idea each: the words users write
(orchestrator.core.language), the class that checks and compiles them
(orchestrator.core.workflow) and the frozen form the transition function
reads (orchestrator.core.spec). This module gathers them, so that a reader
(and `orchestrator/__init__`) finds the language where its name says.
"""

from __future__ import annotations

from orchestrator.core.language import (
    ANY,
    Branch,
    Child,
    Map,
    Notify,
    On,
    Publish,
    State,
    Task,
    task_path,
)
from orchestrator.core.schedule import Schedule, ScheduleSpec
from orchestrator.core.spec import (
    CANCELLED,
    LOST_TRIES,
    TASK_LOST,
    Definition,
    NotifySpec,
    StateSpec,
    TaskSpec,
    TransitionSpec,
)
from orchestrator.core.workflow import Workflow

__all__ = [
    "ANY",
    "CANCELLED",
    "LOST_TRIES",
    "TASK_LOST",
    "Branch",
    "Child",
    "Definition",
    "Map",
    "Notify",
    "NotifySpec",
    "On",
    "Publish",
    "Schedule",
    "ScheduleSpec",
    "State",
    "StateSpec",
    "Task",
    "TaskSpec",
    "TransitionSpec",
    "Workflow",
    "task_path",
]

"""A workflow and notification orchestrator on Redis and RQ.

Public API: the definition language (Workflow, State, Task, Branch, Map, Child,
On, Notify, Publish, ANY, Schedule),
what a task may raise or ask (NonRetryable, task_info, TaskInfo) and the
client (Orchestrator). Everything else is internal.

Each name is imported when it is first used (PEP 562): importing any module of the
package runs this file first, and a command that only reads (`orchestrator status`)
should not pay for the definition language, the client and its Redis driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.core.definition import (
        ANY,
        Branch,
        Child,
        Map,
        Notify,
        On,
        Publish,
        Schedule,
        State,
        Task,
        Workflow,
    )
    from orchestrator.core.errors import NonRetryable, OrchestratorError
    from orchestrator.entry.client import Orchestrator
    from orchestrator.entry.settings import Settings
    from orchestrator.runtime.taskinfo import TaskInfo, task_info

_HOME = {
    **dict.fromkeys(
        [
            "ANY",
            "Branch",
            "Child",
            "Map",
            "Notify",
            "On",
            "Publish",
            "Schedule",
            "State",
            "Task",
            "Workflow",
        ],
        "orchestrator.core.definition",
    ),
    "NonRetryable": "orchestrator.core.errors",
    "OrchestratorError": "orchestrator.core.errors",
    "Orchestrator": "orchestrator.entry.client",
    "Settings": "orchestrator.entry.settings",
    "TaskInfo": "orchestrator.runtime.taskinfo",
    "task_info": "orchestrator.runtime.taskinfo",
}

__all__ = [
    "ANY",
    "Branch",
    "Child",
    "Map",
    "NonRetryable",
    "Notify",
    "On",
    "Orchestrator",
    "OrchestratorError",
    "Publish",
    "Schedule",
    "Settings",
    "State",
    "Task",
    "TaskInfo",
    "Workflow",
    "task_info",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # found here from now on, without this call
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

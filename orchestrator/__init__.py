"""A workflow and notification orchestrator on Redis and RQ.

Public API: the definition language (Workflow, State, Task, Branch, Map, Child,
On, Notify, Publish, ANY, Schedule),
what a task may raise or ask (NonRetryable, task_info, TaskInfo) and the
client (Orchestrator). Everything else is internal.
"""

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

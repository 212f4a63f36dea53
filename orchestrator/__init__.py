"""A workflow and notification orchestrator on Redis and RQ.

Public API: the definition language (Workflow, State, Task, On, Notify, ANY)
and the client (Orchestrator). Everything else is internal.
"""

from orchestrator.client import Orchestrator
from orchestrator.definition import ANY, Notify, On, State, Task, Workflow
from orchestrator.errors import OrchestratorError
from orchestrator.settings import Settings

__all__ = [
    "ANY",
    "Notify",
    "On",
    "Orchestrator",
    "OrchestratorError",
    "Settings",
    "State",
    "Task",
    "Workflow",
]

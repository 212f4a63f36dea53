"""The engine's 3-step workflow (flow3.py) as a version that publishes: one business
event on entering each of its four states, shaped by a small pydantic model.

Loaded by the worker processes through ORCHESTRATOR_WORKFLOWS=bench.flows.flow3_published:
a workflow publishes BUSINESS events of its own (bench.flows.orch.OrchestratorPublishing,
its subscriber reading them); with ORCHESTRATOR_PUBLISH_LIFECYCLE=1 (the unread variant)
LIFECYCLE events of the engine's too: started, transitioned three times (first -> second
-> third -> done), completed.
The tasks are flow3's, unchanged.
"""

from __future__ import annotations

from pydantic import BaseModel

from bench.flows.flow3 import one, three, two
from orchestrator import On, Publish, State, Task, Workflow

NAME = "bench3pub"
STATES = ("first", "second", "third", "done")
TYPES = tuple(f"bench3.{state}" for state in STATES)  # one business event per state entered
BUSINESS = len(TYPES)
LIFECYCLE = 5  # orchestrator.workflow.started, .transitioned x 3, .completed
PER_WORKFLOW = BUSINESS  # what the subscribed variant publishes
WITH_LIFECYCLE = BUSINESS + LIFECYCLE  # ... and the unread one


class Entered(BaseModel):
    """The payload of each business event: which workflow entered the state."""

    wf: str


class ThreeStepsPublished(Workflow):
    name = NAME
    publishes = [Publish(kind, Entered, data=["wf"], version=1) for kind in TYPES]
    first = State(initial=True, task=Task(one, timeout=30), publish=["bench3.first"])
    second = State(task=Task(two, timeout=30), publish=["bench3.second"])
    third = State(task=Task(three, timeout=30), publish=["bench3.third"])
    done = State(final=True, publish=["bench3.done"])
    transitions = [
        On("task.completed", source=first, target=second),
        On("task.completed", source=second, target=third),
        On("task.completed", source=third, target=done),
    ]

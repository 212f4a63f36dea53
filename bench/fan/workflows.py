"""The engine's side of the fan workload: loaded by the driver and, through
ORCHESTRATOR_WORKFLOWS=bench.fan.workflows, by the worker processes.

`bench_fan`: one state maps the no-op `item` over the 100 items of its input, at most
100 at once; it is left once all have completed (the fan-in), for a state whose one
task records the finish time (bench.flows.steps.finish), as the peers' chord or group
callback does. `bench_map`: one state maps `item` over any number of items, at most
100 at once, then the final state. `bench_parallel`: a parallel state of three no-op
branches, then the recording task. `bench_parent`: a state whose step is a child
workflow (`bench_child`: one no-op task), then the recording task.
"""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from bench.flows import steps
from orchestrator import Child, Map, On, State, Task, Workflow

FAN = "bench_fan"
MAP = "bench_map"
PARALLEL = "bench_parallel"
PARENT = "bench_parent"
CHILD = "bench_child"
BRANCHES = 3  # of the parallel state
WIDTH = 100  # items of one fan-out
CONCURRENCY = 100  # the maps' max_concurrency


def item(ctx: dict[str, Any]) -> None:
    """A map item: nothing at all."""


def fan_in(ctx: dict[str, Any]) -> None:
    """After the fan-in: the workflow is done at this instant (through the job's own
    connection, as bench.flows.flow3 records its finish)."""
    job = get_current_job()
    steps.finish(ctx["wf"], job.connection if job is not None else None)


class FanOut(Workflow):
    name = FAN
    fanning = State(
        initial=True,
        map=Map(Task(item, timeout=30), items="items", max_concurrency=CONCURRENCY),
    )
    fanned_in = State(task=Task(fan_in, timeout=30))
    done = State(final=True)
    transitions = [
        On("task.completed", source=fanning, target=fanned_in),
        On("task.completed", source=fanned_in, target=done),
    ]


class WideMap(Workflow):
    name = MAP
    mapping = State(
        initial=True,
        map=Map(Task(item, timeout=30), items="items", max_concurrency=CONCURRENCY),
    )
    done = State(final=True)
    transitions = [On("task.completed", source=mapping, target=done)]


class Parallel(Workflow):
    name = PARALLEL
    branching = State(
        initial=True, parallel={f"b{n}": Task(item, timeout=30) for n in range(BRANCHES)}
    )
    joined = State(task=Task(fan_in, timeout=30))
    done = State(final=True)
    transitions = [
        On("task.completed", source=branching, target=joined),
        On("task.completed", source=joined, target=done),
    ]


class OneTaskChild(Workflow):
    name = CHILD
    running = State(initial=True, task=Task(item, timeout=30))
    done = State(final=True)
    transitions = [On("task.completed", source=running, target=done)]


class Parent(Workflow):
    name = PARENT
    waiting = State(initial=True, child=Child(CHILD, input=["wf"]))
    finishing = State(task=Task(fan_in, timeout=30))
    done = State(final=True)
    transitions = [
        On("task.completed", source=waiting, target=finishing),
        On("task.completed", source=finishing, target=done),
    ]

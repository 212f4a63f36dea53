"""Issue #18's construct rows: parallel states and child workflows, a row each, in the
fan workload (figures only: no peer runs the same shape here).

Each is measured as bench.flows measures its 3-step workflows
(bench.flows.driver.throughput): W workflows preloaded with the workers stopped, on a
private redis-server; the workers start; the clock runs from their first take to the
last finish time the workflow's last task recorded (bench.fan.workflows.fan_in).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from bench.fan.workflows import BRANCHES
from bench.flows.base import System
from bench.flows.driver import Sizes, throughput
from bench.flows.run import fresh

# kind -> (its system, its row's label, tasks a workflow runs)
CONSTRUCTS = {
    "parallel": (
        "bench.fan.orch.ParallelOrchestrator",
        f"parallel states/s, {BRANCHES} no-op branches then a task, 2 workers, W={{}}",
        BRANCHES + 1,
    ),
    "child": (
        "bench.fan.orch.ChildOrchestrator",
        "children/s: a parent awaits a one-task child workflow, then a task, 2 workers, W={}",
        2,
    ),
}


def construct(kind: str, workflows: int, drain: float, folder: Path) -> dict[str, Any]:
    """One construct's workflows/s, the flows driver's way: `workflows` preloaded, the
    workers started, first take to last finish (within `drain` s); its row (figures
    only) and its details."""
    where, label, tasks_each = CONSTRUCTS[kind]
    module, cls = where.rsplit(".", 1)
    factory: type[System] = getattr(importlib.import_module(module), cls)
    with fresh(factory, folder) as (system, _):
        part = throughput(system, Sizes(preloaded=workflows, drain_preloaded=drain))
        note = system.workers_note
    done, seconds = part["finished"], part["seconds"]
    trips = part["redis"]["round_trips"]
    notes = [
        f"{round(done * tasks_each / seconds):,} tasks/s ({tasks_each} a workflow)"
        if seconds > 0
        else "no time measured",
        f"{trips / (done * tasks_each):.2f} Redis round trips per task" if done else "",
        f"worker start-up {part['startup_seconds']} s not counted",
    ]
    if done < part["workflows"]:
        notes.insert(0, f"{part['workflows'] - done} of {part['workflows']} unfinished")
    row = {
        "workload": label.format(workflows),
        "system": "orchestrator",
        "value": part["per_second"],
        "target": "figures only",
        "met": None,
        "note": "; ".join(n for n in notes if n),
    }
    return {"row": row, "workers": note, "throughput": part}

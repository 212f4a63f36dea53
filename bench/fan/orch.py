"""The engine's side: `python -m cli.main worker --processes 2 --notifiers 0`, as bench.flows
runs it (bench.flows.orch), with this workload's workflows (bench.fan.workflows)."""

from __future__ import annotations

from pathlib import Path

from bench.fan.workflows import BRANCHES, FAN, PARALLEL, PARENT, WIDTH
from bench.flows.orch import TASK_PROCESSES, OrchestratorSystem

MODULE = "bench.fan.workflows"


class FanOrchestrator(OrchestratorSystem):
    """Each fan-out one `bench_fan` instance, started with Orchestrator.start."""

    module = MODULE

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        self.workers_note = (
            f"`python -m cli.main worker --processes {TASK_PROCESSES} --notifiers 0 "
            f"--isolation {self.isolation}`: {TASK_PROCESSES} task workers + 1 applier; "
            f"one bench_fan instance per fan-out (a map of {WIDTH} items, then the fan-in "
            "task), started one by one with Orchestrator.start"
        )

    def submit(self, wf: str) -> None:
        self.instances[wf] = self.client.start(FAN, {"wf": wf, "items": list(range(WIDTH))})


class ParallelOrchestrator(OrchestratorSystem):
    """Each workflow one `bench_parallel` instance: three no-op branches, then a task."""

    module = MODULE
    scraped_after_run = False

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        self.workers_note = self.workers_note.replace(
            "instances started", f"{PARALLEL} instances ({BRANCHES} branches) started"
        )

    def submit(self, wf: str) -> None:
        self.instances[wf] = self.client.start(PARALLEL, {"wf": wf})


class ChildOrchestrator(OrchestratorSystem):
    """Each workflow one `bench_parent` instance, which starts one child and awaits it."""

    module = MODULE
    scraped_after_run = False

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        self.workers_note = self.workers_note.replace(
            "instances started", f"{PARENT} instances (one child each) started"
        )

    def submit(self, wf: str) -> None:
        self.instances[wf] = self.client.start(PARENT, {"wf": wf})

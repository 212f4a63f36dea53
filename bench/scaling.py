"""How the engine scales on one Redis: 1, 2 and 4 appliers (each in its own worker
supervisor, the task workers spread over them), the flows row's 3-step workflow.

    python -m bench.scaling [--workflows N] [--appliers 1,2,4] [--json PATH]

For each count K, on a private redis-server: K `orchestrator worker` supervisors, each
one applier and `--processes` task workers (together at least the flows row's two),
share the namespace's partitions by lease, as a deployment of K machines would. The
driver preloads N workflows, then measures, from the first take to the last finish:

    workflows/s   finished workflows over that window
    redis CPU     the server's own (INFO cpu: used_cpu_user + used_cpu_sys, main thread
                  and its helpers) per workflow step and per applied event; with the
                  steps/s this gives how busy one Redis core is
    appliers CPU  every applier process's CPU per applied event (psutil), and the task
                  workers' per step

On this 2-core machine the counts past 2 share the same two cores: what the curve
shows is the cost of each applier added (leases, reads that find nothing, more
commits of smaller batches) and the Redis CPU a step costs, from which docs/scaling.md
draws the capacity of one primary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.flows.driver import STEPS, Sizes, throughput
from bench.flows.orch import EVENTS_PER_WORKFLOW, TASK_PROCESSES, OrchestratorSystem
from bench.flows.run import fresh
from bench.notify_procs import cpu_seconds
from bench.report import machine
from support.procs import children

COUNTS = (1, 2, 4)
WORKFLOWS = 3000


def spread(appliers: int) -> int:
    """Task workers per supervisor: together at least the flows row's two."""
    return max(1, -(-TASK_PROCESSES // appliers))


def scaled(appliers: int) -> type[OrchestratorSystem]:
    """The flows row's engine as K worker supervisors (K appliers), task workers spread."""
    per = spread(appliers)

    class Scaled(OrchestratorSystem):
        name = f"orchestrator-{appliers}-appliers"
        scraped_after_run = False

        def __init__(self, url: str, folder: Path) -> None:
            super().__init__(url, folder)
            self.workers_note = (
                f"{appliers} x `worker --processes {per} --notifiers 0`: {appliers} "
                f"appliers, {appliers * per} task workers"
            )
            self.at_first_take: Cpu | None = None  # CPU when work started: start-up left out

        def start_workers(self) -> None:
            args = ["-m", "cli.main", "worker", "--processes", str(per), "--notifiers", "0"]
            for n in range(appliers):
                self.workers.python(f"orchestrator-worker-{n}", args, self.worker_environment())

        def taken(self) -> bool:  # the driver polls this until a worker took work
            took = super().taken()
            if took and self.at_first_take is None:
                self.at_first_take = Cpu.now(self)
            return took

    return Scaled


@dataclass(frozen=True)
class Cpu:
    """CPU seconds so far of the server, the appliers and the task workers."""

    redis: float
    appliers: float
    tasks: float
    processes: tuple[tuple[int, ...], tuple[int, ...]]  # (appliers, task workers)

    @classmethod
    def now(cls, system: OrchestratorSystem) -> Cpu:
        """Each supervisor's first child is its applier (orchestrator.entry.worker starts
        it first)."""
        appliers: list[int] = []
        tasks: list[int] = []
        for popen, _ in system.workers.processes:
            kids = children(popen.pid)  # oldest first
            appliers += kids[:1]
            tasks += kids[1:]
        return cls(
            _redis_cpu(system),
            _cpu(appliers),
            _cpu(tasks),
            (tuple(appliers), tuple(tasks)),
        )

    def since(self, system: OrchestratorSystem) -> tuple[float, float, float]:
        """(redis, appliers, tasks) CPU seconds spent since this one, same processes."""
        appliers, tasks = self.processes
        return (
            _redis_cpu(system) - self.redis,
            _cpu(list(appliers)) - self.appliers,
            _cpu(list(tasks)) - self.tasks,
        )


def _redis_cpu(system: OrchestratorSystem) -> float:
    """The server's own CPU seconds (INFO cpu: its main thread and helpers)."""
    info = system.redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)  # 0 for one gone (a worker must not exit)


def measure(appliers: int, workflows: int, folder: Path) -> dict[str, Any]:
    """One count: throughput, and the CPU of Redis, the appliers and the task workers."""
    with fresh(scaled(appliers), folder / f"k{appliers}") as (running, version):
        assert isinstance(running, OrchestratorSystem)
        found = throughput(running, Sizes(preloaded=workflows))
        start = getattr(running, "at_first_take", None)
        assert start is not None, "the driver saw work taken before it measured"
        redis_cpu, applier_cpu, task_cpu = start.since(running)
    finished = found["finished"]
    steps, events = STEPS * finished, EVENTS_PER_WORKFLOW * finished
    per_second = found["per_second"] or 0.0
    return {
        "appliers": appliers,
        "redis_version": version,
        "task_workers": appliers * spread(appliers),
        "workflows": finished,
        "per_second": per_second,
        "steps_per_second": round(per_second * STEPS, 1),
        "redis_cpu_us_per_step": round(redis_cpu / steps * 1e6, 1) if steps else None,
        "redis_busy": round(redis_cpu / found["seconds"], 3) if found["seconds"] else None,
        "applier_cpu_us_per_event": round(applier_cpu / events * 1e6, 1) if events else None,
        "task_cpu_us_per_step": round(task_cpu / steps * 1e6, 1) if steps else None,
        "round_trips_per_step": found["redis"].get("round_trips_per_step"),
        "commands_per_step": found["redis"].get("commands_per_step"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--workflows", type=int, default=WORKFLOWS, help="preloaded per count")
    parser.add_argument("--appliers", default=",".join(map(str, COUNTS)), help="counts: 1,2,4")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each count, interleaved")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.appliers.split(",")]
    found: list[dict[str, Any]] = []
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder:
        for n in range(args.rounds):
            for count in counts:
                row = measure(count, args.workflows, Path(folder) / f"r{n}")
                found.append(row)
                _print(row)
    redis_version = found[0]["redis_version"] if found else "?"
    report = {"machine": machine(redis_version, 0.0), "workflows": args.workflows, "runs": found}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def _print(row: dict[str, Any]) -> None:
    print(
        f"{row['appliers']} appliers, {row['task_workers']} task workers: "
        f"{row['per_second']:,.0f} workflows/s ({row['steps_per_second']:,.0f} steps/s); "
        f"redis {row['redis_cpu_us_per_step']} us/step (busy {row['redis_busy']}), "
        f"appliers {row['applier_cpu_us_per_event']} us/event, "
        f"tasks {row['task_cpu_us_per_step']} us/step, "
        f"{row['round_trips_per_step']} round trips and {row['commands_per_step']} "
        "commands a step",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())

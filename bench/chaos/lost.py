"""child-kill: how fast the engine calls a killed try lost.

RQ calls no failure callback when a work-horse is SIGKILLed (the out-of-memory
path), and a worker killed whole leaves its job "started"; the engine's
watchdog must notice either way (orchestrator/watchdog.py). Rounds alternate:
a work-horse alone, then one worker's whole tree (restarted after a pause).
Only horses already at work are aimed at: the sink line each task writes
first names its job and its pid (one horse runs one job), so every kill is
tied to the try it cut. For each, the seconds from the kill to the history's
`task.failed` with error_type TaskLost for that try (its event `at`).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

from bench.chaos import procs
from bench.chaos.cluster import Cluster, Shape, cluster
from bench.chaos.model import Snapshot
from bench.chaos.runner import Batch, Chaos, Run
from bench.chaos.scenarios import (
    Outcome,
    Row,
    _folder,
    common_rows,
    fault_row,
    health_row,
    settle_for,
)
from bench.chaos.workload import SINK

BOUND = 20.0  # seconds from a kill to the engine's TaskLost


@dataclass
class Cut:
    """One kill and the tries (engine job ids) it cut."""

    kind: str
    at: float
    jobs: list[str]


class LostRun(Run):
    """A Run whose kills alternate horse / whole worker, each tied to the jobs it cut."""

    def __init__(self, c: Cluster, seed: int, aim: str) -> None:
        super().__init__(c, seed)
        self.cuts: list[Cut] = []
        self.round = 0
        self.aim = aim  # only tries of instances whose id starts with this are cut

    def _working(self) -> dict[int, tuple[int, str]]:
        """Live horse pid -> (slot, job) for every horse whose task has written its line."""
        jobs: dict[int, str] = {}
        lines: list[bytes] = self.cluster.app.redis.lrange(SINK, -200, -1)  # type: ignore[assignment]
        for line in lines:
            call = json.loads(line)
            if call["kind"] == "task" and str(call["i"]).startswith(self.aim):
                jobs[int(call["pid"])] = str(call["job"])
        roles = self.cluster.pool.roles()
        out: dict[int, tuple[int, str]] = {}
        for slot, pid in self.cluster.pool.running():
            for child in procs.children(pid):
                if roles.get(child) != "tasks":
                    continue
                for horse in procs.children(child):
                    if horse in jobs:
                        out[horse] = (slot, jobs[horse])
        return out

    def _kill(self, chaos: Chaos) -> int:
        pool, working = self.cluster.pool, self._working()
        if not working:
            return 0
        whole = self.round % 2 == 1
        self.round += 1
        horse = self.rng.choice(sorted(working))
        slot = working[horse][0]
        if whole:
            root = pool.procs[slot].pid
            jobs = [job for _, (s, job) in sorted(working.items()) if s == slot]
            at = time.time()
            pool._log("worker", [root, *procs.descendants(root)], pool.tree_roles(root), slot)
            pool._kill([root])
            pool.down_until[slot] = time.monotonic() + self.rng.uniform(0.5, 2.0)
        else:
            jobs = [working[horse][1]]
            at = time.time()
            pool._log("horse", [horse], ["horse"], slot)
            pool._kill([horse])
        self.cuts.append(Cut("worker" if whole else "horse", at, jobs))
        return 1


def delays(cuts: list[Cut], snapshot: Snapshot) -> tuple[list[float], list[str], int]:
    """Seconds from each cut try's kill to its TaskLost; the tries never called lost (with
    what the history says instead), and how many answered before the kill took."""
    lost: dict[str, float] = {}
    answered: set[str] = set()
    for history in snapshot.histories.values():
        for entry in history:
            data = entry["event"].get("data") or {}
            job = str(data.get("job", ""))
            if data.get("error_type") == "TaskLost" and entry["event"]["type"] == "task.failed":
                lost.setdefault(job, float(entry["event"]["at"]))
            elif entry["event"]["type"] in ("task.completed", "task.failed"):
                answered.add(job)
    seconds: list[float] = []
    missing: list[str] = []
    early = 0
    for cut in cuts:
        for job in cut.jobs:
            if job in lost:
                seconds.append(lost[job] - cut.at)
            elif job in answered:
                early += 1  # its answer was committed before the kill landed
            else:
                missing.append(f"{cut.kind} kill at {cut.at:.3f}: try {job} never called lost")
    return seconds, missing, early


def child_kill(size: str) -> Outcome:
    """Kills aim at the long tasks ("ck-", ~1 s); the full size adds short orders ("cn-")
    beside them, so that enough notifications go out for the duplicate budget."""
    count, extra, over, lasts = {
        "full": (30, 110, 45.0, 50.0),
        "quick": (24, 0, 15.0, 25.0),
        "ci": (24, 0, 15.0, 25.0),
    }[size]
    folder, began = _folder("child-kill"), time.monotonic()
    with cluster(folder, Shape()) as c:
        run = LostRun(c, seed=7, aim="ck-")
        batches = [Batch("ck", count, over, fail_every=0, work=1.0)]
        if extra:
            batches.append(Batch("cn", extra, over, fail_every=0, work=0.05))
        run.drive(batches, Chaos(every=(2.0, 3.0), lasts=lasts))
        run.settle(settle_for(size))
        snapshot, report = run.collect()
    seconds, missing, early = delays(run.cuts, snapshot)
    report.violations.setdefault("lost_latency", []).extend(missing)
    late = [s for s in seconds if s > BOUND]
    kinds = {k: sum(1 for c in run.cuts if c.kind == k) for k in ("horse", "worker")}
    top = max(seconds, default=0.0)
    median = statistics.median(seconds) if seconds else 0.0
    rows = [
        *common_rows(report, budget=size != "ci"),
        health_row(run),
        Row(
            "kills, each tied to a running try",
            f"{kinds['horse']} horse, {kinds['worker']} whole worker; {len(seconds)} tries cut"
            + (f", {early} answered first" if early else ""),
            ">= 1 of each",
            kinds["horse"] > 0 and kinds["worker"] > 0,
        ),
        Row(
            "kill -> TaskLost (max, median)",
            f"{top:.1f}s, {median:.1f}s; {len(late)} over, {len(missing)} never",
            f"<= {BOUND:.0f}s each",
            bool(seconds) and not late and not missing,
        ),
        fault_row(report, snapshot),
    ]
    return Outcome("child-kill", rows, report, time.monotonic() - began, folder)

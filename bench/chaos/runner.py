"""One chaos run: start instances on a schedule, kill on a schedule, settle, collect, check.

The harness is the only client: every start and emit goes through the
journaled client, every kill through the pool (which logs it first). After
the chaos ends every worker is brought back, the run waits until quiet (see
collect.quiet), the workers are stopped gracefully so nothing moves, and the
records are loaded and checked.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.checker import check
from bench.chaos.cluster import PHONE, Cluster
from bench.chaos.collect import load, unsettled
from bench.chaos.journal import Journal, JournaledClient
from bench.chaos.model import Report, Snapshot
from bench.chaos.providers import prism_receipts
from bench.chaos.workload import NOTE

KINDS = ("child", "horse", "pickup", "worker", "everything")


@dataclass(frozen=True)
class Chaos:
    """What to kill and how often; no kills when `every` is None."""

    every: tuple[float, float] | None = (2.0, 4.0)
    kinds: dict[str, float] = field(
        default_factory=lambda: {
            "child": 0.5,
            "horse": 0.15,
            "pickup": 0.1,
            "worker": 0.15,
            "everything": 0.1,
        }
    )
    roles: dict[str, float] = field(
        default_factory=lambda: {"applier": 1.0, "tasks": 2.0, "notifications": 1.0}
    )
    lasts: float = 45.0  # seconds from the first start


@dataclass(frozen=True)
class Batch:
    """Instances to start: `count` of `workflow`, spread over `over` seconds."""

    prefix: str
    count: int
    over: float
    workflow: str = "chaos_order"
    fail_every: int = 10  # every n-th fails at its last step (0: none)
    work: float = 0.1
    undo_work: float = 0.1
    notes: int = 1  # chaos.note events emitted to each instance
    note_within: float = 8.0  # seconds after its start, at random


def inputs(batch: Batch, n: int) -> tuple[str, dict[str, Any]]:
    ref = f"{batch.prefix}-{n:04d}"
    fail = bool(batch.fail_every) and n % batch.fail_every == batch.fail_every - 1
    return ref, {
        "ref": ref,
        "email": f"{ref}@example.com",
        "contact": f"{ref}+orders@example.com",
        "phone": PHONE,
        "fail": fail,
        "work": batch.work,
        "undo_work": batch.undo_work,
    }


def unexpected_tracebacks(text: str, only: str = "") -> int:
    """Tracebacks in a worker's log that no one asked for: a failed try of a task is
    logged at WARNING with its traceback (orchestrator.runtime.tasks), on purpose, and
    chaos workloads fail tasks on purpose; those are not counted. With `only`, just the
    unexpected ones whose first 4,000 characters hold it."""
    count = 0
    start = 0
    while (found := text.find("Traceback", start)) >= 0:
        start = found + 1
        line_before = text[:found].rstrip("\n").rsplit("\n", 1)[-1]
        if " try " in line_before and ", failed: " in line_before:
            continue  # a task's failure, logged with its traceback
        if only and only not in text[found : found + 4000]:
            continue
        count += 1
    return count


class Run:
    def __init__(self, cluster: Cluster, seed: int) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.journal = Journal(cluster.folder / "journal.jsonl")
        self.client = JournaledClient(cluster.app.client, self.journal)
        self.ids: list[str] = []
        self.unexpected: list[str] = []  # worker exits the harness did not cause
        self.tracebacks = 0  # in the workers' logs

    def drive(self, batches: list[Batch], chaos: Chaos) -> None:
        """Start the batches (interleaved by time) and their notes, killing as told."""
        began = time.monotonic()
        starts: list[tuple[float, Batch, int]] = []
        for batch in batches:
            gap = batch.over / max(1, batch.count)
            starts += [(n * gap + self.rng.uniform(0, gap), batch, n) for n in range(batch.count)]
        starts.sort(key=lambda s: s[0])
        notes: list[tuple[float, str, str]] = []
        next_kill = self._next(0.0, chaos)
        kills, now = 0, 0.0
        while starts or notes or time.monotonic() - began < chaos.lasts:
            now = time.monotonic() - began
            while starts and starts[0][0] <= now:
                _, batch, n = starts.pop(0)
                ref, data = inputs(batch, n)
                self.ids.append(self.client.start(batch.workflow, data, instance_id=ref))
                if batch.workflow == "chaos_order":
                    notes += [
                        (now + self.rng.uniform(0, batch.note_within), ref, f"note-{ref}-{k}")
                        for k in range(batch.notes)
                    ]
                    notes.sort()
            while notes and notes[0][0] <= now:
                _, ref, event_id = notes.pop(0)
                self.client.emit(NOTE, ref, event_id, {"n": event_id})
            if next_kill is not None and now >= next_kill and now < chaos.lasts:
                kills += self._kill(chaos)
                next_kill = self._next(time.monotonic() - began, chaos)
            self.cluster.pool.ensure_running()
            time.sleep(0.05)
        self.cluster.pool.down_until.clear()
        self.cluster.pool.ensure_running()
        say(f"  started {len(self.ids)} instances, {kills} kills in {now:.0f}s")

    def _next(self, now: float, chaos: Chaos) -> float | None:
        return None if chaos.every is None else now + self.rng.uniform(*chaos.every)

    def _kill(self, chaos: Chaos) -> int:
        pool, rng = self.cluster.pool, self.rng
        kind = rng.choices(list(chaos.kinds), list(chaos.kinds.values()))[0]
        actions: dict[str, Callable[[], bool]] = {
            "child": lambda: pool.kill_child(rng, chaos.roles),
            "horse": lambda: pool.kill_horse(rng) or pool.kill_child(rng, chaos.roles),
            "pickup": lambda: pool.kill_at_pickup(rng) or pool.kill_child(rng, chaos.roles),
            "worker": lambda: pool.kill_worker(rng),
            "everything": lambda: pool.kill_everything(rng),
        }
        return int(actions[kind]())

    def settle(self, timeout: float) -> float:
        """Wait until quiet (twice in a row, a second apart); returns the seconds waited."""
        began = time.monotonic()
        calm, left = 0, None
        while time.monotonic() - began < timeout:
            self.cluster.pool.ensure_running()
            left = unsettled(self.cluster.app, self.ids)
            calm = calm + 1 if left is None else 0
            if calm >= 2:
                break
            time.sleep(1.0)
        waited = time.monotonic() - began
        say(
            f"  quiet after {waited:.0f}s"
            if calm >= 2
            else f"  NOT quiet after {waited:.0f}s: {left}"
        )
        return waited

    def collect(self) -> tuple[Snapshot, Report]:
        self.cluster.pool.stop()
        self.unexpected = list(self.cluster.pool.unexpected)
        logs = sorted(self.cluster.folder.glob("worker-*.log"))
        self.tracebacks = sum(
            unexpected_tracebacks(log.read_text(errors="replace")) for log in logs
        )
        self.journal.close()
        cluster = self.cluster
        receipts = cluster.smtp.receipts() + prism_receipts(cluster.prism_log)
        snapshot = load(cluster.app, cluster.folder, receipts, self.ids)
        dump = json.dumps(dataclasses.asdict(snapshot), separators=(",", ":"))
        (cluster.folder / "snapshot.json").write_text(dump)
        return snapshot, check(snapshot, cluster.app.registry.get)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)

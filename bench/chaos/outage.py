"""redis-restart: Redis SIGKILLed and restarted from its folder, then a long outage.

The redis-server runs `--appendonly yes --appendfsync always`: a reply means
the write is on disk. It is SIGKILLed and restarted on the same port from the
same folder, again and again, while the harness keeps starting instances and
emitting events; a call that fails is tried again later (same instance id,
same event id) and journaled only once it returns. Then Redis is shut down
for a long outage and started again. The workers are never restarted by the
harness during any of it: they must ride it out and carry on by themselves.

Last, the engine's refusal of an unsafe server (orchestrator/connection.py):
`worker --burst` against `--appendonly no` and against
`--maxmemory-policy allkeys-lru` exits 1 naming the problem; with
`--accept-risk` it runs.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import redis

from bench.chaos.cluster import Cluster, Shape, cluster
from bench.chaos.runner import Batch, Run, inputs, say
from bench.chaos.scenarios import (
    Outcome,
    Row,
    _folder,
    common_rows,
    fault_row,
    settle_for,
)
from bench.chaos.workload import NOTE
from orchestrator.core.errors import InstanceExists
from support.redis_server import RedisServer

CUT = ["redis", "notifications"]
RESUME_BOUND = 20.0  # seconds from Redis back to the first task answer applied


class OutageRun(Run):
    """Starts and emits that survive Redis going away: each call is retried until it returns."""

    def __init__(self, c: Cluster, seed: int) -> None:
        super().__init__(c, seed)
        self.todo: list[tuple[float, str, Any]] = []  # (due, kind, what)
        self.refused = 0  # calls that failed while Redis was away (tried again)
        self.restarts: list[float] = []  # seconds each restart took to answer PING

    def plan(self, batch: Batch, began: float) -> None:
        gap = batch.over / max(1, batch.count)
        for n in range(batch.count):
            self.todo.append((began + n * gap + self.rng.uniform(0, gap), "start", (batch, n)))
        self.todo.sort(key=lambda t: t[0])

    def pump(self) -> None:
        """Make every call that is due; one that fails is put back a little later."""
        now = time.monotonic()
        while self.todo and self.todo[0][0] <= now:
            _, kind, what = self.todo.pop(0)
            try:
                self._call(kind, what, now)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                self.refused += 1
                self.todo.append((now + 0.2, kind, what))
                self.todo.sort(key=lambda t: t[0])
                return

    def _call(self, kind: str, what: Any, now: float) -> None:
        if kind == "start":
            batch, n = what
            ref, data = inputs(batch, n)
            try:
                self.ids.append(self.client.start(batch.workflow, data, instance_id=ref))
            except InstanceExists:  # an earlier try was applied; its reply was lost
                self.ids.append(ref)
            due = now + self.rng.uniform(0, 6)
            self.todo.append((due, "emit", ref))
            self.todo.sort(key=lambda t: t[0])
        else:
            self.client.emit(NOTE, what, f"note-{what}-0", {"n": what})

    def wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end or (seconds == 0 and self.todo):
            self.pump()
            time.sleep(0.05)
            if seconds == 0 and not self.todo:
                break

    def bounce(self, down: float) -> None:
        """SIGKILL Redis, leave it down `down` seconds (still calling), start it again."""
        server = self.cluster.redis
        # A Redis crash cuts every notification worker off from the ledger: a message the
        # provider accepted just then may not be recorded sent (the ambiguous window).
        self.cluster.faults.write({"at": time.time(), "action": "redis-kill", "roles": CUT})
        server.kill()
        self.wait(down)
        self.restarts.append(server.start())


def _unsafe(c: Cluster, extra: tuple[str, ...], accept: bool) -> tuple[int, str]:
    """Run `worker --burst` against a fresh redis-server started with `extra`."""
    folder = c.folder / f"unsafe-{len(list(c.folder.glob('unsafe-*')))}"
    folder.mkdir()
    server = RedisServer(folder, *extra, fsync="always")
    server.start()
    try:
        env = {**c.pool.env, "REDIS_URL": server.url}
        command = [sys.executable, "-m", "cli.main", "worker", "--burst"]
        done = subprocess.run(
            [*command, *(["--accept-risk"] if accept else [])],
            env=env,
            cwd=env["PYTHONPATH"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.returncode, (done.stdout + done.stderr).strip()
    finally:
        server.stop()


def refusal_rows(c: Cluster) -> list[Row]:
    rows: list[Row] = []
    cases = (
        ("appendonly no", ("--appendonly", "no"), "append-only persistence"),
        ("maxmemory-policy allkeys-lru", ("--maxmemory-policy", "allkeys-lru"), "allkeys-lru"),
    )
    for name, extra, needle in cases:
        code, out = _unsafe(c, extra, accept=False)
        at = max(0, out.find(needle))
        rows.append(
            Row(
                f"worker --burst on {name}",
                f"exit {code}: ...{out[at : at + 50]}...",
                f"exit 1 naming {needle}",
                code == 1 and needle in out,
            )
        )
    code, out = _unsafe(c, ("--appendonly", "no"), accept=True)
    rows.append(
        Row(
            "... with --accept-risk",
            f"exit {code}: {(out.splitlines() or [''])[-1][:60]}",
            "exit 0, runs",
            code == 0,
        )
    )
    return rows


def first_answer_after(snapshot_histories: dict[str, list[dict[str, Any]]], at: float) -> float:
    """Seconds from `at` to the first task answer applied after it (inf when none)."""
    found = [
        float(e["event"]["at"])
        for history in snapshot_histories.values()
        for e in history
        if e["event"]["type"] == "task.completed" and float(e["event"]["at"]) >= at
    ]
    return min(found, default=float("inf")) - at


OUTAGE_ERRORS = re.compile(
    r"^(redis\.exceptions\.(ConnectionError|TimeoutError|BusyLoadingError)"
    r"|orchestrator\.errors\.RedisUnavailable"
    r"|ConnectionRefusedError|ConnectionResetError|BrokenPipeError|TimeoutError)\b"
)
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # a log record's first line


def outage_health_row(run: Run) -> Row:
    """Exits nobody caused must be 0; a traceback is allowed only for Redis being away (the
    worker's children die of it and their supervisor restarts them: see the report)."""
    errors: Counter[str] = Counter()
    restarts = 0
    for log in sorted(run.cluster.folder.glob("worker-*.log")):
        on_purpose = False  # in a task's failure, logged with its traceback on purpose
        for line in log.read_text(errors="replace").splitlines():
            if RECORD.match(line):  # a new log record (its traceback's lines follow it)
                on_purpose = " try " in line and ", failed: " in line
            elif EXCEPTION.match(line) and not on_purpose:
                errors["redis" if OUTAGE_ERRORS.match(line) else line[:60]] += 1
            restarts += "; restarting it" in line
    other = {k: n for k, n in errors.items() if k != "redis"}
    return Row(
        "worker exits nobody caused; tracebacks not of Redis",
        f"{len(run.unexpected)}; {sum(other.values())} {sorted(other)[:2]} "
        f"(info: {errors['redis']} Redis errors; supervisors restarted children {restarts}x)",
        "0; 0",
        not run.unexpected and not other,
    )


def redis_restart(size: str) -> Outcome:
    quick = size != "full"
    # twenty crashes (the scenario 3); its duplicate share is shown, not judged:
    # every send in flight at a crash is a copy inside the window, so the share follows
    # the crash rate (the 0.5% budget is scenario 1's, worker kills)
    bounces, outage = (5, 10.0) if quick else (20, 30.0)
    count, over = (30, 20.0) if quick else (105, 50.0)
    folder, began = _folder("redis-restart"), time.monotonic()
    with cluster(folder, Shape()) as c:
        run = OutageRun(c, seed=11)
        supervisors = [pid for _, pid in c.pool.running()]
        start = time.monotonic()
        run.plan(Batch("rr", count, over, work=0.2), start)
        for k in range(bounces):
            run.wait(start + (k + 1) * over / (bounces + 1) - time.monotonic())
            run.bounce(run.rng.uniform(0.2, 1.5))
        run.wait(0)
        say(f"  {bounces} Redis kills; {run.refused} calls refused and tried again")
        c.faults.write({"at": time.time(), "action": "redis-shutdown", "roles": CUT})
        c.redis.stop()
        run.plan(Batch("after", count // 3, outage + 8.0, work=0.2), time.monotonic())
        run.wait(outage)
        run.restarts.append(c.redis.start())
        back = time.time()
        run.wait(0)
        alive_after = [pid for _, pid in c.pool.running()]
        run.settle(settle_for(size))
        snapshot, report = run.collect()
        rows_refusal = refusal_rows(c)
    resumed = first_answer_after(snapshot.histories, back)
    copies = report.figure("duplicate_notifications")  # sends in flight when Redis went
    restarted = sum(1 for f in snapshot.faults if f.get("action") == "restart")
    rows = [
        *common_rows(report, budget=False),
        outage_health_row(run),
        Row(
            "Redis SIGKILLs, restarts (max to PING)",
            f"{bounces} kills, {len(run.restarts)} starts ({max(run.restarts):.2f}s); "
            f"{run.refused} calls refused, retried; "
            f"{copies:.0f} notification copies ({copies / (bounces + 1):.1f} per crash)",
            f"{bounces} + the outage",
            len(run.restarts) == bounces + 1,
        ),
        Row(
            "workers restarted by the harness",
            f"{restarted}; supervisors alive {len(alive_after)}/{len(supervisors)}, same pids",
            "0, all, same",
            restarted == 0 and alive_after == supervisors,
        ),
        Row(
            f"after a {outage:.0f}s outage: first task answer",
            f"{resumed:.1f}s after Redis was back",
            f"<= {RESUME_BOUND:.0f}s",
            resumed <= RESUME_BOUND,
        ),
        *rows_refusal,
        fault_row(report, snapshot),
    ]
    return Outcome("redis-restart", rows, report, time.monotonic() - began, folder)

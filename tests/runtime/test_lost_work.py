"""Lost work: a task whose work-horse or whole worker dies is detected and retried."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.entry.bootstrap import App
from orchestrator.entry.worker import run_burst
from orchestrator.runtime.watchdog import CHECK_EVERY, INTERMEDIATE
from tests.conftest import ROOT, cli_env


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_killed_work_horse_and_killed_worker_are_detected_and_retried(
    app: App, tmp_path: Path
) -> None:
    env = cli_env(app.settings.redis_url, tmp_path, ORCHESTRATOR_LEASE_TTL="2")
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--processes", "1", "--isolation", "job"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Given a task that kills its own work-horse on its first try (RQ runs no callback),
        # then a task that sleeps on its first try
        horse_marker, sleeper_marker = tmp_path / "horse", tmp_path / "sleeper"
        iid = app.client.start(
            "fragile", {"marker": str(horse_marker), "marker2": str(sleeper_marker)}
        )
        # When the first work-horse dies, the engine notices and the retry succeeds
        wait_for(lambda: sleeper_marker.exists(), 30, "the second task to start")
        # And when the whole worker running the second task is killed with SIGKILL
        horse = int(sleeper_marker.read_text())
        rq_worker = parent_of(horse)
        killed_at = time.time()
        subprocess.run(["kill", "-9", str(rq_worker), str(horse)], check=True)
        wait_for(lambda: app.client.status(iid).finished, 30, "the instance to finish")
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    # Then both losses were reported as failed tries and retried, and the workflow completed
    final = app.client.status(iid)
    assert (final.state, final.status) == ("done", "completed"), output
    history = app.client.history(iid)
    lost = [h for h in history if h["event"]["data"].get("error_type") == "TaskLost"]
    assert [h["from"] for h in lost] == ["working", "sleeping"]
    assert all(h["outcome"] == "retry" for h in lost)
    # within 20 seconds of the kill
    assert lost[1]["event"]["at"] - killed_at < 20


def test_a_job_stranded_by_a_worker_that_died_while_taking_it_is_retried(app: App) -> None:
    # Given a task job that a worker moved off the queue (into RQ's intermediate list,
    # as its dequeue does) and then died before starting it
    iid = app.client.start("order", {"order_id": "X1", "work_seconds": 0})
    applier = app.applier()
    applier.drain()
    (job,) = [j.decode() for j in app.redis.lrange("rq:queue:tasks", 0, -1)]
    app.redis.lmove("rq:queue:tasks", INTERMEDIATE[0], "LEFT", "RIGHT")
    # When the watchdog has seen it stranded for a whole check period
    partitions = list(range(app.keys.partitions))
    watchdog = applier.dispatcher.watchdog
    outstanding = app.keys.outstanding(app.keys.partition_of(iid))
    app.redis.zadd(outstanding, {job: 0})  # due for a check now
    assert watchdog.check(partitions, time.time()) == 0  # first sight: a worker may be starting it
    app.redis.set(app.keys.stranded(job), time.time() - CHECK_EVERY - 1)  # a period has passed
    app.redis.zadd(outstanding, {job: 0})
    assert watchdog.check(partitions, time.time()) == 1
    # Then it is reported lost (and taken out of RQ's hands), retried, and the order ships
    assert app.redis.lpos(INTERMEDIATE[0], job) is None
    applier.leases.release_all()
    run_burst(app)
    final = app.client.status(iid)
    assert final.state == "shipped", app.client.history(iid)
    lost = [
        h for h in app.client.history(iid) if h["event"]["data"].get("error_type") == "TaskLost"
    ]
    assert [h["outcome"] for h in lost] == ["retry"]

"""`orchestrator worker` as users run it: a supervisor with an applier and forked RQ workers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.entry.bootstrap import App
from support.procs import children
from tests.conftest import ROOT, cli_env, run_cli


def wait_final(env: dict[str, str], instance_id: str, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        result = run_cli("status", instance_id, "--json", env=env)
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        if status["status"] in ("completed", "failed", "cancelled"):
            return dict(status)
        assert time.monotonic() < deadline, f"{instance_id} still {status['status']}"
        time.sleep(0.2)


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`orchestrator worker ARGS` as a user starts it; its output (text) in `stdout`."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_worker_runs_orders_survives_a_killed_child_and_stops_on_sigterm(
    app: App, tmp_path: Path
) -> None:
    env = cli_env(app.settings.redis_url, tmp_path, ORCHESTRATOR_LEASE_TTL="1")
    worker = start_worker(env, "--processes", "2")
    try:
        # Given a running worker and two orders started from the CLI
        good = run_cli(
            "start",
            "order",
            "--input",
            '{"order_id": "W1", "email": "w@example.com", "work_seconds": 0}',
            env=env,
        )
        bad = run_cli(
            "start",
            "order",
            "--input",
            '{"order_id": "W2", "card": "declined", "work_seconds": 0}',
            env=env,
        )
        assert good.returncode == 0 and bad.returncode == 0, good.stderr + bad.stderr
        # Then the good one ships and the declined one fails after undoing its reservation
        shipped = wait_final(env, good.stdout.strip())
        assert (shipped["state"], shipped["status"]) == ("shipped", "completed")
        failed = wait_final(env, bad.stdout.strip())
        assert (failed["state"], failed["status"]) == ("failed", "failed")
        # When a child process (the applier or an RQ worker) is killed
        before = children(worker.pid)
        assert len(before) == 4  # the applier, two task workers, one notification worker
        victim = before[0]
        subprocess.run(["kill", "-9", str(victim)], check=True)
        deadline = time.monotonic() + 10
        while len(children(worker.pid)) < 4 or victim in children(worker.pid):
            assert time.monotonic() < deadline, "the supervisor did not replace the child"
            time.sleep(0.1)
        # Then the supervisor replaces it and new work still completes
        again = run_cli(
            "start", "order", "--input", '{"order_id": "W3", "work_seconds": 0}', env=env
        )
        assert wait_final(env, again.stdout.strip())["state"] == "shipped"
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    # And SIGTERM stops it cleanly, leaving no child behind
    assert worker.returncode == 0, output
    # (the only tracebacks are those of the failed tasks, logged at WARNING)
    failures = output.count(" WARNING orchestrator.runtime.tasks: ")
    assert output.count("Traceback") == failures, output


def test_process_isolation_runs_tasks_without_a_fork_and_survives_a_task_that_kills_it(
    app: App, tmp_path: Path
) -> None:
    env = cli_env(app.settings.redis_url, tmp_path, ORCHESTRATOR_LEASE_TTL="2")
    worker = start_worker(env, "--processes", "1", "--isolation", "process")
    try:
        # Given a task that kills its own process on its first try, which here is the
        # task worker itself (no work-horse is forked)
        marker, marker2 = tmp_path / "died", tmp_path / "slept"
        marker2.write_text("already slept")
        iid = app.client.start("fragile", {"marker": str(marker), "marker2": str(marker2)})
        # When it runs: the supervisor starts the worker again and the try is reported lost
        final = wait_final(env, iid, timeout=60)
        # Then the retry finished the workflow
        assert (final["state"], final["status"]) == ("done", "completed")
        lost = [
            h for h in app.client.history(iid) if h["event"]["data"].get("error_type") == "TaskLost"
        ]
        assert [h["outcome"] for h in lost] == ["retry"]
        assert marker.read_text() == "died"
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert "(process isolation)" in output
    assert "exited with -9" in output  # the task worker itself died, and was replaced
    assert worker.returncode == 0, output


def test_an_unknown_isolation_is_a_clear_error(app: App, tmp_path: Path) -> None:
    result = run_cli(
        "worker", "--isolation", "thread", env=cli_env(app.settings.redis_url, tmp_path)
    )
    assert result.returncode != 0
    assert "--isolation" in result.stderr and "job, process" in result.stderr


def test_process_isolation_ends_a_worker_whose_task_outlives_its_deadline(
    app: App, tmp_path: Path
) -> None:
    env = cli_env(app.settings.redis_url, tmp_path, ORCHESTRATOR_LEASE_TTL="2")
    worker = start_worker(env, "--processes", "1")
    try:
        # Given a task (timeout 1 s) that swallows its timeout on its first try and goes on
        marker = tmp_path / "stubborn"
        iid = app.client.start("stubborn", {"marker": str(marker)})
        # When it runs in the default isolation, in the task worker process itself
        final = wait_final(env, iid, timeout=60)
        # Then the supervisor ended that process past the deadline, the try was reported
        # lost and the retry finished the workflow
        assert (final["state"], final["status"]) == ("done", "completed")
        lost = [
            h for h in app.client.history(iid) if h["event"]["data"].get("error_type") == "TaskLost"
        ]
        assert [h["outcome"] for h in lost] == ["retry"]
        assert marker.exists()
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert "past its job's deadline" in output
    assert "exited with -9" in output
    assert worker.returncode == 0, output

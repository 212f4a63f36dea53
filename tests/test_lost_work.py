"""Lost work: a task whose work-horse or whole worker dies is detected and retried."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.bootstrap import App
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
        [sys.executable, "-m", "cli.main", "worker", "--processes", "1"],
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

"""Deadlines, absolute timeouts and ignored events through the real CLI and a real
worker process (issue #15)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import cli_env, run_cli, worker_process


def test_deadline_timeout_at_and_ignore_with_a_real_worker(redis_url: str, tmp_path: Path) -> None:
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS="tests.deadline_workflows")
    at = datetime.fromtimestamp(time.time() + 1.5, UTC).isoformat()
    late = run_cli("start", "booking", env=env).stdout.strip()
    lost = run_cli("start", "unrouted", env=env).stdout.strip()
    meeting = run_cli("start", "appointment", "--input", json.dumps({"starts_at": at}), env=env)
    meeting_id = meeting.stdout.strip()
    log = tmp_path / "worker.log"
    with worker_process(env, log):
        # the paid booking, started once the worker runs (its 8 s are for the steps below,
        # not for the worker's start on a loaded machine): payment in time, a reminder it
        # ignores, then confirmed
        paid = run_cli("start", "booking", env=env).stdout.strip()
        status = wait_for(env, paid, lambda s: s["state"] == "awaiting_payment", log)
        run_cli("emit", "payment.received", "--instance", paid, env=env)
        wait_for(env, paid, lambda s: s["state"] == "paid", log)
        reminder = run_cli("emit", "payment.reminder", "--instance", paid, env=env)
        assert reminder.returncode == 0, reminder.stderr
        run_cli("emit", "confirm", "--instance", paid, env=env)
        status = wait_for(env, paid, lambda s: s["state"] == "confirmed", log)
        # the late one: past its 8 s deadline, its seat released, then expired
        status = wait_for(env, late, lambda s: s["state"] == "expired", log)
        assert status["context"]["released"] is True
        # no row for the deadline: failed for good, the reason in `status`
        wait_for(env, lost, lambda s: s["status"] == "failed", log)
        text = run_cli("status", lost, env=env).stdout
        assert "deadline of 1s passed in state 'waiting'" in text
        # the appointment: reminded at the moment its context gave
        wait_for(env, meeting_id, lambda s: s["state"] == "reminded", log)
    history = json.loads(run_cli("history", paid, "--json", env=env).stdout)
    ignored = [h for h in history if h["event"]["type"] == "payment.reminder"]
    assert ignored and ignored[0]["outcome"] == "ignored"
    assert "paid ignores payment.reminder" in ignored[0]["note"]
    lived = json.loads(run_cli("history", late, "--json", env=env).stdout)
    deadline = [h for h in lived if h["event"]["type"] == "workflow.deadline"]
    assert deadline and deadline[0]["outcome"] == "compensating"


def wait_for(env: dict[str, str], iid: str, done: object, log: Path) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while True:
        shown = run_cli("status", iid, "--json", env=env)
        status = json.loads(shown.stdout) if shown.returncode == 0 else {}
        if status and done(status):  # type: ignore[operator]
            return status  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"{iid}: {status}\n{log.read_text()[-2000:]}"
        time.sleep(0.2)

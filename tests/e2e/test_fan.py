"""Parallel states and maps through the real CLI and a real worker process (issue #15):
a parallel state whose second branch fails compensates only the first; a map of
1,000 items with 5 failures tolerated finishes with 995 results in order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import cli_env, run_cli, worker_process
from tests.e2e.test_deadlines import wait_for


def undone(history: list[dict[str, Any]]) -> list[str]:
    """The steps whose compensation completed, in the order they were undone."""
    return [
        h["event"]["data"]["state"]
        for h in history
        if h["event"]["type"] == "compensation.completed"
    ]


def test_parallel_branches_and_a_map_with_a_real_worker(redis_url: str, tmp_path: Path) -> None:
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS="tests.fan_workflows")
    happy = run_cli("start", "checkout", env=env).stdout.strip()
    # the stock branch fails for good after the charge branch completed
    unhappy = run_cli(
        "start", "checkout", "--input", json.dumps({"out_of_stock": True}), env=env
    ).stdout.strip()
    items = list(range(1000))
    bad = [3, 250, 500, 750, 999]
    mapped = run_cli(
        "start", "wide_doubling", "--input", json.dumps({"items": items, "bad": bad}), env=env
    )
    assert mapped.returncode == 0, mapped.stderr
    mapped_id = mapped.stdout.strip()
    log = tmp_path / "worker.log"
    with worker_process(env, log):
        status = wait_for(env, happy, lambda s: s["state"] == "done", log)
        assert status["context"] == {"charged": True, "reserved": True, "label": "label-1"}
        status = wait_for(env, unhappy, lambda s: s["state"] == "failed", log)
        assert status["context"]["refunded"] is True and "released" not in status["context"]
        status = wait_for(env, mapped_id, lambda s: s["state"] == "done", log)
    doubled = status["context"]["doubled"]
    assert doubled == [i * 2 for i in items if i not in bad]  # 995 results, in item order
    failures = status["context"]["doubled_failures"]
    assert [f["index"] for f in failures] == bad
    assert all(f["error_type"] == "NonRetryable" for f in failures)

    history = json.loads(run_cli("history", unhappy, "--json", env=env).stdout)
    assert undone(history) == ["preparing/charge"]  # only the branch that completed
    failed = [h for h in history if h["event"]["type"] == "task.failed"]
    assert failed[0]["event"]["data"]["state"] == "preparing/reserve"
    assert "branch reserve failed" in " ".join(h["note"] for h in history)
    shown = run_cli("status", unhappy, env=env)
    assert shown.returncode == 0 and "failed" in shown.stdout
    replayed = run_cli("replay", mapped_id, env=env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    replayed = run_cli("replay", unhappy, env=env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr

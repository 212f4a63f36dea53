"""Child workflows through the real CLI and a real worker process (issue #15): a parent
cancelled while its child runs ends with the child cancelled and compensated; a
completed child is undone when its parent compensates past it; a map of children."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import cli_env, run_cli, worker_process
from tests.e2e.test_deadlines import wait_for


def undone(env: dict[str, str], iid: str) -> list[str]:
    history = json.loads(run_cli("history", iid, "--json", env=env).stdout)
    return [
        h["event"]["data"]["state"]
        for h in history
        if h["event"]["type"] == "compensation.completed"
    ]


def start(env: dict[str, str], workflow: str, data: dict[str, Any]) -> str:
    shown = run_cli("start", workflow, "--input", json.dumps(data), env=env)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.strip()


def test_children_with_a_real_worker(redis_url: str, tmp_path: Path) -> None:
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS="tests.child_workflows")
    slow = start(
        env, "parcel", {"order_id": 1, "dispatch_seconds": 8}
    )  # a window for a loaded machine
    fraud = start(env, "parcel", {"order_id": 2, "fraud": True})
    fleet = start(env, "fleet", {"parcels": ["a", "b", "c"]})
    log = tmp_path / "worker.log"
    with worker_process(env, log):
        # the parent is cancelled while its child dispatches (packed: unpacking is due)
        status = wait_for(env, slow, lambda s: s["state"] == "shipping", log)
        child = status["children"]["shipping"]
        wait_for(env, child, lambda s: s["state"] == "dispatching", log)
        cancelled = run_cli("cancel", slow, "--reason", "customer", env=env)
        assert cancelled.returncode == 0, cancelled.stderr
        parent = wait_for(env, slow, lambda s: s["status"] == "cancelled", log)
        child_status = wait_for(env, child, lambda s: s["status"] == "cancelled", log)
        # the completed child is undone when the fraud check compensates past it
        done = wait_for(env, fraud, lambda s: s["state"] == "failed", log)
        fraud_child = done["children"]["shipping"]
        undone_child = wait_for(env, fraud_child, lambda s: s["status"] == "cancelled", log)
        shipped = wait_for(env, fleet, lambda s: s["state"] == "done", log)
    assert parent["context"]["refunded"] is True
    assert undone(env, child) == ["packing"]  # compensated by its own steps
    assert child_status["parent"] == {"instance": slow, "step": "shipping"}
    assert "its parent" in (child_status["reason"] or "")
    assert undone(env, fraud) == ["shipping", "charging"]  # newest first: the child, then
    assert undone(env, fraud_child) == ["packing"]
    assert "undone: its parent" in (undone_child["reason"] or "")
    assert shipped["context"]["shipping"] == ["TRK-a", "TRK-b", "TRK-c"]
    assert sorted(shipped["children"]) == ["shipping/0", "shipping/1", "shipping/2"]
    text = run_cli("status", fraud_child, env=env).stdout
    assert f"parent:  {fraud} (step shipping)" in text
    text = run_cli("status", fraud, env=env).stdout
    assert f"children: shipping {fraud_child}" in text
    for iid in (slow, child, fraud, fraud_child, fleet):
        replayed = run_cli("replay", iid, env=env)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr

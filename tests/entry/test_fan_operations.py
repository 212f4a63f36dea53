"""Operating parallel and map states from the client (issue #15): answering one branch
from outside, a clear error naming the running branches, `status` showing them, and
`retry` of a parallel state whose failure nothing handled."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.errors import InvalidOperation
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.entry.worker import run_burst
from tests.conftest import cli_env, run_cli


@pytest.fixture
def fan_app(redis_url: str, tmp_path: Path) -> App:
    return bootstrap(
        Settings(
            redis_url=redis_url,
            workflows=("tests.fan_workflows",),
            partitions=2,
            data_dir=tmp_path,
        )
    )


def test_a_branch_answered_from_outside_and_a_wrong_one_refused(fan_app: App) -> None:
    client = fan_app.client
    iid = client.start("checkout")
    applier = fan_app.applier()
    applier.leases.maintain(force=True)
    applier.drain()  # started: three branches wait, no worker runs them
    summary = client.status(iid).summary()
    assert summary["branches"] == {
        "running": ["charge", "label", "reserve"],
        "completed": 0,
        "failed": [],
        "total": 3,
    }
    with pytest.raises(InvalidOperation, match=r"runs branches of state preparing \(charge, "):
        client.emit("task.completed", {}, instance_id=iid, task="ship")
    client.emit("task.completed", {"charged": "outside"}, instance_id=iid, task="charge")
    client.emit("task.completed", {}, instance_id=iid, task="preparing/reserve")
    client.emit("task.completed", {"labelled": True}, instance_id=iid, task="label")
    applier.drain()
    done = client.status(iid)
    assert done.state == "done"
    assert done.context == {"charged": "outside", "labelled": True}
    assert client.replay(iid).matches


def test_retry_resumes_only_the_branches_that_did_not_complete(fan_app: App) -> None:
    client = fan_app.client
    iid = client.start("unhandled_parallel", {"out_of_stock": True})
    run_burst(fan_app)
    halted = client.status(iid)
    assert (halted.state, halted.status, halted.halted) == ("preparing", "failed", True)
    assert "branch reserve failed: out of stock" in (halted.reason or "")
    assert halted.fan is not None and set(halted.fan.results) == {"charge"}
    client.retry(iid)
    run_burst(fan_app)  # still out of stock: the reserve fails again, the charge is kept
    again = client.status(iid)
    assert again.halted and again.fan is not None and set(again.fan.results) == {"charge"}
    history = client.history(iid)
    charges = [h for h in history if h["event"].get("data", {}).get("state") == "preparing/charge"]
    assert len(charges) == 1  # charged once, whatever the retries
    assert client.replay(iid).matches


def test_status_shows_the_branches_and_caps_the_steps_to_undo(
    fan_app: App, redis_url: str, tmp_path: Path
) -> None:
    iid = fan_app.client.start("doubling", {"items": list(range(30))})
    run_burst(fan_app)
    done = fan_app.client.status(iid)
    assert done.state == "done" and done.context["doubled"] == [i * 2 for i in range(30)]
    running = fan_app.client.start("doubling", {"items": list(range(30))})
    applier = fan_app.applier()
    applier.leases.maintain(force=True)
    applier.drain()
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS="tests.fan_workflows")
    env["ORCHESTRATOR_PARTITIONS"] = "2"
    shown = run_cli("status", running, env=env)
    assert "branches: 0 of 30 completed, 0 failed, running: 0, 1, 2" in shown.stdout

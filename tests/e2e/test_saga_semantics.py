"""Saga semantics end to end: a real Redis, real `orchestrator worker` processes.

Nothing finished is left undone (a task completing after its state was left is
compensated), a failure nothing handles fails the instance, and a worker killed
during a compensation given as a bare function does not leave the saga half
undone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core import events as ev
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.entry.worker import run_burst
from tests.conftest import ROOT, cli_env

WORKFLOWS = ("workflows", "tests.saga_workflows")


@pytest.fixture
def app(redis_url: str, tmp_path: Path) -> App:
    return bootstrap(
        Settings(redis_url=redis_url, workflows=WORKFLOWS, partitions=4, data_dir=tmp_path)
    )


@pytest.fixture
def worker(app: App, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`orchestrator worker` as users run it, loading the test workflows."""
    env = cli_env(
        app.settings.redis_url,
        tmp_path,
        ORCHESTRATOR_WORKFLOWS=",".join(WORKFLOWS),
        ORCHESTRATOR_LEASE_TTL="2",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--processes", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def undone(app: App, iid: str) -> list[str]:
    """The steps whose compensation completed, in the order they did."""
    return [
        e["event"]["data"]["state"]
        for e in app.client.history(iid)
        if e["event"]["type"] == ev.COMPENSATION_COMPLETED and e["outcome"] != "ignored"
    ]


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_the_slow_card_charged_after_its_timeout_is_refunded_then_the_stock_released(
    app: App, worker: subprocess.Popen[str]
) -> None:
    # Given the bundled order with a card slower than the payment timeout (3 s)
    iid = app.client.start(
        "order", {"order_id": "SLOW", "card": "slow", "slow_seconds": 5, "work_seconds": 0}
    )
    # When the timeout fires while the charge runs, and the charge then succeeds
    wait_for(lambda: app.client.status(iid).finished, 40, "the order to finish")
    # Then the order failed, having refunded the late charge and then released the stock
    final = app.client.status(iid)
    assert (final.state, final.status) == ("failed", "failed")
    assert undone(app, iid) == ["charging", "reserving"]
    assert final.context["refunded"] == final.context["charged"] == 10.0
    history = app.client.history(iid)
    (late,) = [e for e in history if e["outcome"] == "late"]
    assert late["event"]["type"] == ev.TASK_COMPLETED
    assert late["event"]["data"]["state"] == "charging"
    assert "compensation is due" in late["note"]
    timeout = next(e for e in history if e["event"]["type"] == "payment.timeout")
    assert timeout["outcome"] == "compensating" and "waits for charging" in timeout["note"]
    # and the stored instance replays from its history
    assert app.client.replay(iid).matches


def test_a_cancel_while_the_car_is_reserved_cancels_that_car(
    app: App, worker: subprocess.Popen[str], tmp_path: Path
) -> None:
    # Given a trip whose flight is booked and whose car is being reserved (3 s)
    log = tmp_path / "log"
    iid = app.client.start("trip", {"log": str(log), "car_seconds": 3})
    wait_for(lambda: app.client.status(iid).state == "car", 20, "the car's reservation")
    # When it is cancelled before the reservation returns
    app.client.cancel(iid, "plans changed")
    wait_for(lambda: app.client.status(iid).finished, 40, "the trip to finish")
    # Then the car reserved after the cancel was cancelled, then the flight
    final = app.client.status(iid)
    assert (final.state, final.status) == ("cancelled", "cancelled")
    assert lines(log) == ["book_flight", "reserve_car", "cancel_car", "cancel_flight"]
    assert undone(app, iid) == ["car", "flight"]
    assert app.client.replay(iid).matches


def test_a_worker_killed_in_a_bare_compensation_still_ends_the_saga_compensated(
    app: App, worker: subprocess.Popen[str], tmp_path: Path
) -> None:
    # Given a charge to refund, by a compensation given as a bare function (no Task)
    log, marker = tmp_path / "log", tmp_path / "marker"
    iid = app.client.start("killed_refund", {"log": str(log), "marker": str(marker)})
    # When the worker running the refund is SIGKILLed part way
    wait_for(marker.exists, 30, "the refund to start")
    subprocess.run(["kill", "-9", marker.read_text()], check=True)
    # Then, with no `retry` from anyone, the refund is tried again and the saga ends undone
    wait_for(lambda: app.client.status(iid).finished, 60, "the saga to finish")
    final = app.client.status(iid)
    assert (final.state, final.status) == ("failed", "failed")
    assert lines(log) == ["charge", "refund"]
    lost = [
        e
        for e in app.client.history(iid)
        if e["event"]["type"] == ev.COMPENSATION_FAILED
        and e["event"]["data"].get("error_type") == "TaskLost"
    ]
    assert [e["outcome"] for e in lost] == ["retry"]
    assert "lost with its worker" in lost[0]["note"]


def test_a_failure_nothing_handles_fails_the_instance_and_retry_resumes_it(
    app: App, tmp_path: Path
) -> None:
    # Given a task whose failure no row of its workflow handles
    log, fixed = tmp_path / "log", tmp_path / "fixed"
    iid = app.client.start("unhandled", {"log": str(log), "fixed": str(fixed)})
    # When it fails
    run_burst(app)
    # Then the instance failed, with a reason naming the state, the task and the error
    stopped = app.client.status(iid)
    assert stopped.status == "failed" and stopped.state == "packing"
    reason = stopped.reason or ""
    assert "'packing'" in reason and "tests.saga_workflows:pack" in reason
    assert "ConnectionError: the packing line is down" in reason
    assert stopped.parked == ()
    assert [i.id for i in app.client.list(status="failed")] == [iid]
    # and `retry`, once the cause is fixed, resumes it
    fixed.touch()
    app.client.retry(iid)
    run_burst(app)
    final = app.client.status(iid)
    assert (final.state, final.status, final.reason) == ("packed", "completed", None)
    assert lines(log) == ["pack"]
    assert app.client.replay(iid).matches


def test_history_shows_each_state_passed_through_with_the_event_that_moved_it_on(
    app: App,
) -> None:
    # Given an order whose payment.timeout came early, parked while stock is reserved
    iid = app.client.start("order", {"order_id": "EARLY", "work_seconds": 0})
    app.client.emit("payment.timeout", instance_id=iid, event_id="early-timeout")
    # When the reservation completes: `charging` is entered and left in the same step
    run_burst(app)
    # Then the history has an entry for `charging`, naming the parked timeout
    history: list[dict[str, Any]] = app.client.history(iid)
    (passed,) = [e for e in history if e["outcome"] == "passed"]
    assert (passed["from"], passed["to"]) == ("reserving", "charging")
    assert (passed["left_on"], passed["left_by"]) == ("payment.timeout", "early-timeout")
    step = history[history.index(passed) + 1]
    assert step["seq"] == passed["seq"] and step["from"] == "charging"
    # and no charge ran for it (only the state the step ends in starts its task)
    assert not any(e["event"]["data"].get("state") == "charging" for e in history[1:])
    assert undone(app, iid) == ["reserving"]
    assert app.client.replay(iid).matches

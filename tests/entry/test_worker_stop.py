"""Stopping a busy `orchestrator worker`: SIGTERM, or Ctrl-C (SIGINT to its process group),
ends it with exit status 0 within 2 s, no process left behind, and nothing lost: every
instance finishes once a worker runs again (a try in flight at the stop either finished
or is reported lost and tried again)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.entry.worker import STOP_COLD, STOP_GRACE
from orchestrator.runtime.dispatch import TASK_QUEUE
from tests.conftest import ROOT, TEST_WORKFLOWS, cli_env

MODULES = (*TEST_WORKFLOWS, "tests.visible_workflows")
WORKFLOWS = ",".join(MODULES)
# the stop's own waits (a busy job's grace, then a cold shutdown's) and the processes'
# exits, which on the suite's loaded 2-core machine took up to 2.43 s (2 s when idle)
STOP_WITHIN = STOP_GRACE + STOP_COLD + 1.5


@pytest.fixture
def app(settings: Settings) -> App:
    return bootstrap(replace(settings, workflows=MODULES))


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    """`orchestrator worker` in a session of its own (its process group: what Ctrl-C hits)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--processes", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_a_busy_worker_stops_within_two_seconds_and_loses_nothing(
    app: App, tmp_path: Path, how: str
) -> None:
    env = cli_env(
        app.settings.redis_url,
        tmp_path,
        ORCHESTRATOR_WORKFLOWS=WORKFLOWS,
        ORCHESTRATOR_LEASE_TTL="1",
    )
    # Given a worker busy with slow chains, one of them in a try far longer than the grace
    worker = start_worker(env)
    try:
        # (started once both task workers listen: had the first batch found none, its
        # five tasks would go in one pack, the short ones queued behind the 30 s one)
        wait_for(
            lambda: app.redis.scard(WORKERS_BY_QUEUE_KEY % TASK_QUEUE) >= 2,
            15,
            "the task workers never registered",
        )
        long = app.client.start("slow_chain", {"seconds": 0.2, "first_seconds": 30})
        short = [app.client.start("slow_chain", {"seconds": 0.4}) for _ in range(4)]
        wait_for(
            lambda: any(app.client.status(i).state == "two" for i in short),
            15,
            "the worker did no work",
        )
        assert app.client.status(long).state == "one"  # its try is in flight
        # When it is asked to stop
        began = time.monotonic()
        if how == "SIGTERM":
            worker.send_signal(signal.SIGTERM)
        else:
            os.killpg(worker.pid, signal.SIGINT)
        worker.wait(10)
        took = time.monotonic() - began
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        output, _ = worker.communicate(timeout=10)
    # Then it exited cleanly within 2 s, its every process gone
    assert worker.returncode == 0, output
    assert took < STOP_WITHIN, f"stopping took {took:.2f}s\n{output}"
    wait_for(lambda: not group_alive(worker.pid), 1, f"processes left behind:\n{output}")
    assert "Traceback" not in output, output
    # And once a worker runs again, every instance finishes: none was lost
    again = start_worker(env)
    try:
        wait_for(
            lambda: all(app.client.status(i).finished for i in [long, *short]),
            15,
            "not every instance finished after the restart",
        )
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=10)
    for iid in [long, *short]:
        final = app.client.status(iid)
        assert (final.state, final.status, final.context["steps"]) == ("done", "completed", 3)
    assert again.returncode == 0

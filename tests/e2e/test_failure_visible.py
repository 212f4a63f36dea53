"""A failing task leaves a trace where a user looks: the worker logs it at WARNING with its
traceback (text, or one JSON object a line with the try's instance, workflow, state, task and
attempt); `history` and `status` show the error's type and message; `history --json` keeps
the traceback, bounded, and never a frame's local variables."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.runtime.tasks import TRACEBACK_BYTES
from tests.conftest import ROOT, TEST_WORKFLOWS, cli_env, run_cli

MODULES = (*TEST_WORKFLOWS, "tests.visible_workflows")
SECRET = "tok-SECRET-4242"
ERROR = "InventoryError: item X-1 is not in stock"


@pytest.fixture
def app(settings: Settings) -> App:
    return bootstrap(replace(settings, workflows=MODULES))


def run_worker_until_failed(app: App, env: dict[str, str], *args: str) -> tuple[str, str]:
    """Start a worker, fail one instance in it, stop it; the instance id and its stderr."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--processes", "1", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        iid = app.client.start("visible_failure", {"item": "X-1", "token": SECRET})
        deadline = time.monotonic() + 15
        while not app.client.status(iid).finished:
            assert time.monotonic() < deadline, "the instance did not finish"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=10)
    assert worker.returncode == 0, stderr
    return iid, stderr


def test_a_failed_task_is_logged_shown_and_kept(app: App, tmp_path: Path) -> None:
    env = cli_env(app.settings.redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS=",".join(MODULES))
    # Given a task that fails on both its tries, run by a worker with its default logging
    iid, stderr = run_worker_until_failed(app, env)
    assert app.client.status(iid).state == "out_of_stock"
    # Then the worker logged each failed try at WARNING, with its traceback
    warnings = [line for line in stderr.splitlines() if " WARNING " in line and ERROR in line]
    assert len(warnings) == 2, stderr
    assert "try 1" in warnings[0] and "try 2" in warnings[1]
    assert "Traceback (most recent call last):" in stderr
    assert "in _look_up" in stderr and 'raise InventoryError(f"item {item}' in stderr
    assert SECRET not in stderr
    # And text `history` shows the error's type and message
    history = run_cli("history", iid, env=env)
    assert history.returncode == 0, history.stderr
    assert ERROR in history.stdout, history.stdout
    # And `history --json` keeps the traceback, bounded, with no local variable's value
    entries: list[dict[str, Any]] = json.loads(run_cli("history", iid, "--json", env=env).stdout)
    failed = [e["event"]["data"] for e in entries if e["event"]["type"] == "task.failed"]
    assert len(failed) == 2
    for data in failed:
        trace = data["traceback"]
        assert trace.startswith("Traceback (most recent call last):")
        assert "in check_stock" in trace and "in _look_up" in trace
        assert trace.rstrip().endswith(ERROR)
        assert len(trace.encode()) <= TRACEBACK_BYTES and SECRET not in trace
    # And text `status` shows the last failure
    status = run_cli("status", iid, env=env)
    assert status.returncode == 0, status.stderr
    assert f"last failure: {ERROR} (state checking, try 2" in status.stdout, status.stdout


def test_json_logs_are_one_object_a_line_with_the_try(app: App, tmp_path: Path) -> None:
    env = cli_env(app.settings.redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS=",".join(MODULES))
    # Given a worker logging JSON at WARNING
    iid, stderr = run_worker_until_failed(
        app, env, "--log-format", "json", "--log-level", "WARNING"
    )
    # Then every line it wrote is one JSON object
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert lines and all(isinstance(line, dict) for line in lines)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys()
        assert line["level"] != "INFO"  # --log-level WARNING
    # And each failed try is one WARNING with the try's fields and its traceback
    failures = [line for line in lines if ERROR in line["message"]]
    assert [f["attempt"] for f in failures] == [1, 2]
    for failure in failures:
        assert failure["level"] == "WARNING"
        assert failure["instance_id"] == iid
        assert (failure["workflow"], failure["state"]) == ("visible_failure", "checking")
        assert failure["task"].endswith("check_stock")
        assert "Traceback (most recent call last):" in failure["exception"]
    # And a line the task logged itself while it ran names its try too
    own = [line for line in lines if line["message"] == "checking stock of X-1"]
    assert [(o["instance_id"], o["attempt"]) for o in own] == [(iid, 1), (iid, 2)]


def test_a_bad_log_option_is_a_clear_error(app: App, tmp_path: Path) -> None:
    env = cli_env(app.settings.redis_url, tmp_path)
    for option, value in (("--log-level", "LOUD"), ("--log-format", "xml")):
        result = run_cli("worker", option, value, env=env)
        assert result.returncode != 0
        assert option in result.stderr

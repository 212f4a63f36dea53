"""Workers that would disagree about the workflows they serve cannot share a namespace
silently (issue #14, point 3): a worker whose workflow set differs from the live
appliers' refuses to start, naming the difference and ORCHESTRATOR_NAMESPACE, unless
told the mix is meant."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from orchestrator.store.keys import Keys
from tests.conftest import ROOT, cli_env, run_cli


def test_a_worker_with_other_workflows_is_refused_unless_allowed(
    redis_url: str, tmp_path: Path
) -> None:
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS="workflows")
    del env["ORCHESTRATOR_ALLOW_MIXED_WORKFLOWS"]  # the check under test
    first = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--processes", "1", "--notifiers", "0"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        client = redis.Redis.from_url(redis_url)
        announced = Keys("orch").applier_workflows
        deadline = time.monotonic() + 20
        while not client.hlen(announced):
            assert first.poll() is None, "the first worker ended"
            assert time.monotonic() < deadline, "the first worker never announced itself"
            time.sleep(0.05)

        other = {**env, "ORCHESTRATOR_WORKFLOWS": "workflows,tests.sample_workflows"}
        refused = run_cli("worker", "--burst", env=other)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        line = refused.stderr.strip()
        assert line.startswith("error: workers on namespace 'orch' serve other workflows")
        assert "this worker has " in line and "ORCHESTRATOR_NAMESPACE" in line
        assert "\n" not in line

        same = run_cli("worker", "--burst", env=env)
        assert same.returncode == 0, same.stderr
        allowed = run_cli("worker", "--burst", "--allow-mixed-workflows", env=other)
        assert allowed.returncode == 0, allowed.stderr
        again = run_cli("worker", "--burst", env=env)  # the mixed burst left: not counted
        assert again.returncode == 0, again.stderr
        elsewhere = run_cli("worker", "--burst", env={**other, "ORCHESTRATOR_NAMESPACE": "other"})
        assert elsewhere.returncode == 0, elsewhere.stderr
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=20)

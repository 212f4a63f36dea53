"""`orchestrator demo` as a new user runs it: no Redis, no settings."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import cli_env, run_cli


def test_demo_runs_every_scenario_on_a_private_embedded_redis(tmp_path: Path) -> None:
    env = cli_env(None, tmp_path)
    env.pop("ORCHESTRATOR_WORKFLOWS")
    env.pop("ORCHESTRATOR_PARTITIONS")
    result = run_cli("demo", env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All 14 scenarios finished" in result.stdout
    for state in ("shipped", "active", "expired", "resolved"):
        assert state in result.stdout
    assert "nothing started" in result.stdout
    # a subscriber received every business event the workflows published, once
    found = re.search(
        r"received by a subscriber \(consumer group 'demo'\): (\d+) of (\d+)", result.stdout
    )
    assert found is not None, result.stdout
    assert found.group(1) == found.group(2) and int(found.group(1)) >= 20
    for kind in ("order.placed 6", "order.shipped 2", "alert.opened 4", "user.expired 1"):
        assert kind in result.stdout
    # It used a private server, and left nothing running in the user's data folder
    assert not (tmp_path / "home" / "redis.sock").exists()

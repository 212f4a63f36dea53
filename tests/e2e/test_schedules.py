"""Schedules through the real CLI and a real worker process: a declared schedule starts
its workflow once a tick, and `orchestrator schedules` adds, shows and stops them."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from tests.conftest import cli_env, run_cli, worker_process

SCHEDULED = "tests.schedule_workflows"


def test_a_worker_starts_a_declared_schedule_once_a_tick(redis_url: str, tmp_path: Path) -> None:
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS=SCHEDULED)
    log = tmp_path / "worker.log"
    with worker_process(env, log) as worker:
        deadline = time.monotonic() + 30
        done: list[dict[str, str]] = []
        while len(done) < 3:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"only {len(done)} heartbeats finished"
            time.sleep(0.5)
            listed = run_cli("list", "--workflow", "heartbeat", "--json", env=env)
            done = [i for i in json.loads(listed.stdout) if i["status"] == "completed"]
    listed = json.loads(run_cli("list", "--workflow", "heartbeat", "--json", env=env).stdout)
    ids = sorted(i["id"] for i in listed)
    first = json.loads(run_cli("status", ids[0], "--json", env=env).stdout)
    assert first["context"]["source"] == "declared"
    assert first["context"]["reported"] == first["context"]["scheduled_at"]
    (shown,) = json.loads(run_cli("schedules", "--json", env=env).stdout)
    assert (shown["name"], shown["origin"], shown["started"]) == ("heartbeat", "declared", len(ids))


def test_schedules_from_the_cli(redis_url: str, tmp_path: Path) -> None:
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS=SCHEDULED)
    added = run_cli(
        "schedules", "add", "nightly", "--workflow", "waiter", "--cron", "30 2 * * *",
        "--tz", "Europe/Paris", "--input", '{"region": "eu"}', "--json", env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    body = json.loads(added.stdout)
    assert (body["cron"], body["timezone"], body["input"]) == (
        "30 2 * * *",
        "Europe/Paris",
        {"region": "eu"},
    )
    # the next runs, shown in the schedule's zone
    shown = run_cli("schedules", "show", "nightly", "--next", "3", env=env)
    assert shown.returncode == 0, shown.stderr
    runs = [line.strip() for line in shown.stdout.splitlines() if line.startswith("  ")]
    assert len(runs) == 3
    for run in runs:
        moment = datetime.fromisoformat(run)
        assert (moment.hour, moment.minute) in ((2, 30), (3, 0))  # 03:00 on a spring-forward day
        assert run.endswith(("+01:00", "+02:00"))
    listed = run_cli("schedules", env=env)
    assert listed.stdout.splitlines()[0].split() == [
        "NAME", "WORKFLOW", "WHEN", "NEXT", "LAST", "STARTED", "ORIGIN",
    ]  # fmt: skip
    assert "At 02:30 every day (Europe/Paris)" in listed.stdout
    # pause: no next run; resume; remove
    assert run_cli("schedules", "pause", "nightly", env=env).returncode == 0
    paused = json.loads(run_cli("schedules", "show", "nightly", "--json", env=env).stdout)
    assert paused["paused"] is True and paused["next_runs"] == []
    assert run_cli("schedules", "resume", "nightly", env=env).returncode == 0
    resumed = json.loads(run_cli("schedules", "show", "nightly", "--json", env=env).stdout)
    assert resumed["paused"] is False and len(resumed["next_runs"]) == 5
    assert run_cli("schedules", "remove", "nightly", env=env).returncode == 0
    assert json.loads(run_cli("schedules", "--json", env=env).stdout) == []


def test_bad_schedules_are_one_line_errors_and_write_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS=SCHEDULED)
    cases = {
        ("--workflow", "waiter", "--cron", "61 * * * *"): "is not valid: Bad minute",
        ("--workflow", "waiter", "--cron", "* * *"): "Wrong number of fields",
        ("--workflow", "waiter", "--every", "5m", "--cron", "* * * * *"): "one of the two",
        ("--workflow", "waiter"): "give cron or every",
        ("--workflow", "waiter", "--every", "soon"): "positive duration",
        ("--workflow", "waiter", "--every", "5m", "--tz", "Mars/Base"): "unknown time zone",
        ("--workflow", "nope", "--every", "5m"): "unknown workflow 'nope'",
        ("--workflow", "keyed", "--every", "5m"): "correlates by 'account'",
        ("--workflow", "waiter", "--every", "5m", "--catch-up", "some"): "catch_up must be",
        ("--workflow", "waiter", "--every", "5m", "--catch-up", "all"): "overlap='allow'",
        ("--workflow", "waiter", "--every", "5m", "--input", "[1]"): "must be a JSON object",
    }
    for args, message in cases.items():
        result = run_cli("schedules", "add", "s", *args, env=env)
        assert result.returncode == 1, (args, result.stdout)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    bad_name = run_cli("schedules", "add", "a b", "--workflow", "waiter", "--every", "1m", env=env)
    assert "letters, digits" in bad_name.stderr
    for verb in ("show", "pause", "resume", "remove"):
        missing = run_cli("schedules", verb, "nope", env=env)
        assert missing.returncode == 1 and "no schedule named 'nope'" in missing.stderr
    assert json.loads(run_cli("schedules", "--json", env=env).stdout) == []

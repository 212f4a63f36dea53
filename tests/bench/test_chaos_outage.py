"""The outage scenarios' health row (bench.chaos.outage): tracebacks of Redis being away
and of tasks failed on purpose are not held against the run; any other is."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.chaos.outage import outage_health_row

REDIS_AWAY = """\
2026-12-07 16:55:56,736 WARNING orchestrator.runtime.applier: Redis unreachable; trying again
Traceback (most recent call last):
  File "x.py", line 1, in f
redis.exceptions.ConnectionError: Error 111 connecting to 127.0.0.1:57463. Connection refused.
2026-12-07 16:55:56,586 WARNING worker: tasks-1 exited with 1; restarting it in 1.6s
"""
ON_PURPOSE = """\
2026-12-07 16:55:58,876 WARNING tasks: task ship of rr-9 in ship, try 4, failed: RuntimeError
Traceback (most recent call last):
  File "/tmp/base/bench/chaos/workload.py", line 194, in ship_parcel
    raise RuntimeError("the carrier refused the parcel")
RuntimeError: the carrier refused the parcel
"""
UNASKED = """\
2026-12-07 16:56:02,000 ERROR orchestrator.runtime.applier: applying task.completed to rr-1
Traceback (most recent call last):
  File "x.py", line 1, in f
ValueError: a bug
"""


def _row(folder: Path, *logs: str) -> Any:
    for index, text in enumerate(logs):
        (folder / f"worker-{index}.log").write_text(text)
    run: Any = SimpleNamespace(cluster=SimpleNamespace(folder=folder), unexpected=[])
    return outage_health_row(run)


def test_redis_errors_and_tasks_failed_on_purpose_pass(tmp_path: Path) -> None:
    row = _row(tmp_path, REDIS_AWAY + ON_PURPOSE, ON_PURPOSE)
    assert row.passed
    assert row.value.startswith("0; 0 []")
    assert "1 Redis errors; supervisors restarted children 1x" in row.value


def test_any_other_traceback_fails_the_run(tmp_path: Path) -> None:
    row = _row(tmp_path, ON_PURPOSE + UNASKED + ON_PURPOSE)
    assert not row.passed
    assert row.value.startswith("0; 1 ['ValueError: a bug']")

"""bench.scaling at a tiny size: two worker supervisors (two appliers) share one Redis,
finish every workflow, and the CPU of the server, the appliers and the task workers is
read over the run."""

from __future__ import annotations

from pathlib import Path

from bench.scaling import measure, spread


def test_two_appliers_finish_every_workflow_and_their_cpu_is_counted(tmp_path: Path) -> None:
    found = measure(2, 30, tmp_path)
    assert (found["appliers"], found["task_workers"], found["workflows"]) == (2, 2, 30)
    assert found["per_second"] > 0 and found["steps_per_second"] == round(
        found["per_second"] * 3, 1
    )
    # every role did work: the server, the appliers (4 events a workflow), the task workers
    assert found["redis_cpu_us_per_step"] > 0
    assert found["applier_cpu_us_per_event"] > 0
    assert found["task_cpu_us_per_step"] > 0
    assert found["round_trips_per_step"] is not None


def test_task_workers_are_spread_so_that_there_are_at_least_two() -> None:
    assert [spread(k) * k for k in (1, 2, 4)] == [2, 2, 4]

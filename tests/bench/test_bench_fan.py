"""The fan workload's harness runs end to end on tiny sizes (no timings asserted).

It starts its own redis-server and a real engine worker, as `python -m bench --only fan`
does; the peers (Celery, Dramatiq) are left to the full benchmark.
"""

from __future__ import annotations

import pytest

from bench.fan.run import FanSizes, run_fan
from bench.fan.workflows import CONCURRENCY
from bench.targets import lines

pytestmark = pytest.mark.slow

TINY = FanSizes(
    fanouts=3, items=300, warm_items=20, drain=60.0, map_limit=60.0, settle=0.0, constructs=4
)


def test_every_fan_out_construct_and_the_map_finish_within_the_concurrency() -> None:
    result = run_fan(["orchestrator"], TINY)

    details = result["details"]
    fanned = details["systems"]["orchestrator"]["throughput"]
    assert fanned["finished"] == fanned["workflows"] == 3
    assert fanned["tasks"] == 3 * 101
    assert fanned["left"]["instances completed"] == 3
    mapped = details["map"]
    assert "error" not in mapped, mapped
    assert mapped["finished"] and mapped["status"] == "completed" and mapped["state"] == "done"
    assert mapped["results"] == 300
    assert 0 < mapped["watch"]["tries"] <= CONCURRENCY
    assert 0 < mapped["watch"]["rq_jobs"] <= CONCURRENCY
    assert mapped["left_at_end"]["instances running"] == 0
    table = lines(result["rows"], "7")
    assert [line.workload for line in table] == [
        "7. fan-outs/s, 100 no-op tasks each, then fan-in, 2 workers, W=3",
        "7. parallel states/s, 3 no-op branches then a task, 2 workers, W=4",
        "7. children/s: a parent awaits a one-task child workflow, then a task, 2 workers, W=4",
        "7. map of 300 no-op items, 2 workers: items/s / Redis B per item",
    ]
    assert table[0].target == ">= fastest peer" and table[0].met is None  # no peer measured
    assert all(line.target == "figures only" and line.met is None for line in table[1:])
    # each construct's workflows all finished: the parents with their children
    for kind in ("parallel", "child"):
        part = details[kind]["throughput"]
        assert part["finished"] == part["workflows"] == 4, (kind, part)
    assert details["child"]["throughput"]["left"]["instances completed"] == 8


def test_the_fan_out_target_is_the_fastest_peer() -> None:
    row = {"workload": "fan-outs/s, W=1", "note": ""}
    rows = [
        {**row, "system": "orchestrator", "value": 30.0},
        {**row, "system": "celery", "value": 10.0},
        {**row, "system": "dramatiq", "value": 31.0},
    ]
    (line,) = lines(rows, "7")
    assert line.workload == "7. fan-outs/s, W=1"
    assert line.met is False and line.why == "0.97x Dramatiq"
    (line,) = lines(rows[:2], "7")
    assert line.met is True and line.why == "3.00x Celery"

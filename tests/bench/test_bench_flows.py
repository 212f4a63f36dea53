"""The workflow benchmark's harness runs end to end on tiny sizes (no timings asserted).

It starts its own redis-server and real worker processes for the engine and
for raw RQ, the two systems that need no optional package.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.flows.driver import WARM_UP, Sizes, percentile
from bench.flows.run import metrics_rows, run_flows
from bench.targets import METRICS_OFF_SYSTEM, lines

TINY = Sizes(preloaded=6, rates=((20, 0.2),), drain=60.0, drain_preloaded=60.0)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0


@pytest.mark.slow
def test_every_workflow_of_every_workload_finishes() -> None:
    result = run_flows(["orchestrator", "rq"], TINY)

    systems = result["details"]["systems"]
    for name in ("orchestrator", "rq"):
        found = systems[name]
        assert "error" not in found, found
        assert found["throughput"]["finished"] == found["throughput"]["workflows"] == 6
        assert found["latency_20"]["finished"] == found["latency_20"]["workflows"] == 4
    orchestrator = systems["orchestrator"]
    assert orchestrator["throughput"]["left_at_end"]["instances completed"] == 6
    assert orchestrator["latency_20"]["left_at_end"]["instances completed"] == 4 + WARM_UP
    assert orchestrator["latency_20"]["left_at_end"]["instances running"] == 0
    for part in ("throughput", "latency_20"):
        assert systems["rq"][part]["left_at_end"]["deferred"] == 0
        assert systems["rq"][part]["left_at_end"]["ready"] == 0
    # /metrics, scraped after the engine's throughput run, shows what the bench counted
    assert orchestrator["metrics"]["agree"], orchestrator["metrics"]
    assert orchestrator["metrics"]["scraped"] == {"completed": 6, "events_applied": 24}
    assert orchestrator["metrics"]["processes"] >= 2  # the applier and task workers
    rows = {(row["system"], row["workload"]) for row in result["rows"]}
    assert rows == {
        (name, workload)
        for name in ("orchestrator", "rq")
        for workload in ("3-step workflows/s, 2 workers, W=6", "latency p50/p99 ms at 20/s")
    } | {("orchestrator", "metrics: /metrics workflows completed / events applied, W=6")}


def test_the_metrics_lines_judge_the_overhead_and_fail_on_a_disagreement() -> None:
    sizes = Sizes(preloaded=1000, rates=(), drain=1.0, drain_preloaded=1.0)
    report = {
        "metrics_on": True,
        "scraped": {"completed": 1000, "events_applied": 4000},
        "counted": {"completed": 1000, "events_applied": 4000},
        "processes": 3,
        "agree": True,
    }
    systems: dict[str, Any] = {
        "orchestrator": {"throughput": {"per_second": 960.0}, "metrics": report},
        METRICS_OFF_SYSTEM: {
            "throughput": {"per_second": 1000.0},
            "metrics": {"metrics_on": False},
        },
    }
    overhead, counts = metrics_rows(systems, sizes)
    assert (overhead["value"], overhead["met"], overhead["target"]) == (0.96, True, ">= 0.95")
    assert (counts["value"], counts["met"]) == ([1000, 4000], True)
    systems["orchestrator"]["throughput"]["per_second"] = 900.0
    report.update(agree=False, scraped={"completed": 999, "events_applied": 3996})
    overhead, counts = metrics_rows(systems, sizes)
    assert overhead["met"] is False
    assert counts["met"] is False and "DISAGREE" in counts["note"]
    judged = {line.workload: line for line in lines(metrics_rows(systems, sizes), "2")}
    assert all(line.met is False for line in judged.values())

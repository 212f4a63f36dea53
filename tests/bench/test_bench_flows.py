"""The workflow benchmark's harness runs end to end on tiny sizes (no timings asserted).

It starts its own redis-server and real worker processes for the engine and
for raw RQ, the two systems that need no optional package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.flows import overhead
from bench.flows.driver import WARM_UP, Sizes, percentile
from bench.flows.run import metrics_rows, run_flows
from bench.targets import lines

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


def test_the_metrics_line_fails_on_a_disagreement() -> None:
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
    }
    (counts,) = metrics_rows(systems, sizes)
    assert (counts["value"], counts["met"]) == ([1000, 4000], True)
    report.update(agree=False, scraped={"completed": 999, "events_applied": 3996})
    (counts,) = metrics_rows(systems, sizes)
    assert counts["met"] is False and "DISAGREE" in counts["note"]
    judged = {line.workload: line for line in lines(metrics_rows(systems, sizes), "2")}
    assert all(line.met is False for line in judged.values())


def test_the_overhead_lines_take_the_median_of_paired_rounds() -> None:
    measured = {
        "workflows": 2000,
        "rounds": 3,
        "per_second": {
            "orchestrator": [1000.0, 1200.0, 800.0],
            "orchestrator-metrics-off": [1000.0, 1300.0, 800.0],  # on/off: 1, 0.923, 1
            "orchestrator-tracing-sampled": [900.0, 1000.0, None],  # a failed round: left out
            "orchestrator-tracing": [500.0, 600.0, 400.0],
            "orchestrator-publishing-only": [850.0, 1100.0, 700.0],  # 0.85, 0.917, 0.875
        },
    }
    found = {row["workload"]: row for row in overhead.rows(measured)}
    metrics = found["overhead: metrics on / off (ORCHESTRATOR_METRICS=0), W=2,000"]
    assert (metrics["value"], metrics["met"]) == (1.0, True)
    tracing = found["overhead: tracing on (OTLP), 1 trace in 10 / off, W=2,000"]
    assert (tracing["value"], tracing["met"]) == (round((0.9 + 1000 / 1200) / 2, 3), True)
    every = found["overhead: tracing on (OTLP), every trace / off, W=2,000"]
    assert (every["value"], every["met"], every["target"]) == (0.5, False, ">= 0.85")
    publishing = found["overhead: publishing 4 events a workflow / none, W=2,000"]
    assert (publishing["value"], publishing["met"]) == (0.875, False)
    assert "median of 3 paired rounds" in publishing["note"]


def test_an_overhead_variant_that_never_finished_is_a_failed_line() -> None:
    measured = {
        "workflows": 10,
        "rounds": 1,
        "per_second": {
            "orchestrator": [100.0],
            "orchestrator-metrics-off": [None],
            "orchestrator-tracing-sampled": [100.0],
            "orchestrator-tracing": [100.0],
            "orchestrator-publishing-only": [100.0],
        },
    }
    (metrics, *_) = overhead.rows(measured)
    assert metrics["value"] is None and metrics["met"] is False


@pytest.mark.slow
def test_the_overhead_rounds_run_every_variant_to_the_end(tmp_path: Path) -> None:
    measured = overhead.measure(6, 1, tmp_path)
    assert set(measured["per_second"]) == {
        "orchestrator",
        "orchestrator-metrics-off",
        "orchestrator-tracing-sampled",
        "orchestrator-tracing",
        "orchestrator-publishing-only",
    }
    assert all(values[0] for values in measured["per_second"].values()), measured

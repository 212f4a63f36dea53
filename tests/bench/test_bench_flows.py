"""The workflow benchmark's harness runs end to end on tiny sizes (no timings asserted).

It starts its own redis-server and real worker processes for the engine and
for raw RQ, the two systems that need no optional package.
"""

from __future__ import annotations

import pytest

from bench.flows.driver import WARM_UP, Sizes, percentile
from bench.flows.run import run_flows

pytestmark = pytest.mark.slow

TINY = Sizes(preloaded=6, rates=((20, 0.2),), drain=60.0, drain_preloaded=60.0)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0


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
    rows = {(row["system"], row["workload"]) for row in result["rows"]}
    assert rows == {
        (name, workload)
        for name in ("orchestrator", "rq")
        for workload in ("3-step workflows/s, 2 workers, W=6", "latency p50/p99 ms at 20/s")
    }

"""Fan-out/fan-in and a wide map (issue #15's parallel and map states), against the peers.

Two measurements, each on its own private redis-server with two worker processes:

- fan-out/fan-in: W workflows, each mapping a no-op task over 100 items (at most 100
  at once) and then running one fan-in task once all 100 have completed; fan-outs per
  second, preloaded with the workers stopped (bench.flows.driver.throughput). Side by
  side: Celery's chord(group of 100, callback), Dramatiq's group of 100 with a
  completion callback (GroupCallbacks middleware, Redis rate-limiter backend);
- a map of 10,000 items (the engine only): one instance, at most 100 items at once;
  items per second from its start to its final state, Redis memory per item, and the
  most RQ jobs and tasks outstanding at any time (bounded by the map's concurrency).

    python -m bench.fan [--quick] [--json PATH] [--systems orchestrator,celery]
"""

from __future__ import annotations

from typing import Any

PEERS = ("celery", "dramatiq")
ALL = ("orchestrator", *PEERS)
QUICK_SYSTEMS = ("orchestrator",)


def measure_fan(quick: bool) -> dict[str, Any]:
    """{"rows": [...], "details": {...}}; quick: small sizes, the engine only."""
    from bench.fan.run import FULL, QUICK, run_fan

    return run_fan(list(QUICK_SYSTEMS if quick else ALL), QUICK if quick else FULL)

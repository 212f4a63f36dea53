"""Workflows end to end against the peers: the engine, raw RQ, Celery, Dramatiq.

Workloads 2 and 3 of issue #6, measured in one run for each system, each on its
own private redis-server, with two worker processes: 3-step workflows
completed per second with W preloaded, and the latency from submission to the
last step's finish, open loop at 50 and 500 workflows per second.

    python -m bench.flows [--quick] [--json PATH] [--systems orchestrator,rq]
"""

from __future__ import annotations

from typing import Any

PEERS = ("celery", "dramatiq")
ALL = ("orchestrator", "orchestrator-job", "rq", *PEERS)
QUICK_SYSTEMS = ("orchestrator", "rq")


def measure_flows(quick: bool) -> dict[str, Any]:
    """{"rows": [...], "details": {...}}; quick: smaller sizes, the engine and RQ only.

    Systems: orchestrator (default worker: jobs run in the worker process),
    orchestrator-job (`--isolation job`: a fork per RQ job), orchestrator-metrics-off
    (ORCHESTRATOR_METRICS=0, throughput only: what metrics cost, issue #16), rq, celery,
    dramatiq (the last two when importable).
    """
    from bench.flows.run import FULL, QUICK, run_flows

    return run_flows(list(QUICK_SYSTEMS if quick else ALL), QUICK if quick else FULL)

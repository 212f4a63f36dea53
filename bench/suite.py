"""The workloads of `python -m bench`, each run in turn, each allowed to fail alone.

Every workload returns {"rows": [...], "details": {...}} (see bench.targets).
Workloads 2-3 (bench.flows), 4 (bench.notify_rate) and 7 (bench.fan) run in
a child process with a time limit (bench.isolated), imported only there (but for
bench.flows.trips, which turns its details into rows): if one is
missing, raises or hangs, its line says "not run" and why, and the others
still run; so does any of ours that raises.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.apply_rate import measure_applier
from bench.flows.trips import trips_rows
from bench.isolated import NotRun, run_isolated
from bench.measure import Measurement
from bench.rq_baseline import measure_rq
from bench.targets import PUBLISHING, Line, lines, not_run
from support.redis_server import private_redis

APPLY_TARGET = 10_000  # events per second, one applier
TRIPS_TARGET = 0.2  # Redis round trips per event

MEMORY = {"full": (1000, 200), "quick": (100, 20)}  # instances measured, run before


@dataclass(frozen=True)
class ScaleSizes:
    sizes: tuple[int, ...]  # finished instances stored
    live: int  # instances run to their end at each size
    singles: int  # one-event batches timed at each size
    repeats: int  # batched rounds over the sizes; the median of each figure is kept


SCALE = {
    "full": ScaleSizes((1_000, 100_000, 1_000_000), live=200, singles=300, repeats=3),
    "quick": ScaleSizes((500, 2_000), live=20, singles=30, repeats=1),  # proves it runs
}
STARTUP_RUNS = {"full": 7, "quick": 1}  # timed runs of each command; no peers when quick
# seconds the workloads run in a child process may take: against hangs, not a budget
LIMITS = {
    "full": {"flows": 900.0, "notify": 600.0, "fan": 600.0},
    "quick": {"flows": 300.0, "notify": 300.0, "fan": 300.0},
}


@dataclass(frozen=True)
class Workload:
    name: str  # for --only
    number: str
    title: str
    run: Callable[[argparse.Namespace], dict[str, Any]]


@dataclass
class Outcome:
    workload: Workload
    seconds: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    crashed: bool = False  # raised something unexpected: a bug in the engine or the bench
    lines: list[Line] = field(default_factory=list)
    extra: Any = None  # objects for the detailed printout, not written to JSON


def applier_vs_rq(args: argparse.Namespace) -> dict[str, Any]:
    with private_redis() as server:
        applier_run = functools.partial(
            measure_applier,
            server.url,
            events=args.events,
            instances=args.instances,
            partitions=args.partitions,
            batch_size=args.batch_size,
        )
        orch_runs = [applier_run() for _ in range(args.repeat)]
        rq_runs = [measure_rq(server.url, jobs=args.jobs) for _ in range(args.repeat)]
        orch, rq = _best(orch_runs), _best(rq_runs)
        if args.profile:
            applier_run(profile_lines=args.profile)
    how = (
        f"{orch.items} tick events over {args.instances} counter instances, one Applier; "
        f"RQ: {rq.items} no-op jobs, one SimpleWorker"
    )
    rows = [
        {
            "workload": "1. events/s, one applier (RQ: no-op jobs/s)",
            "system": "orchestrator",
            "value": round(orch.per_second),
            "target": f">= {APPLY_TARGET:,}/s",
            "met": orch.per_second >= APPLY_TARGET,
            "note": how,
        },
        {
            "workload": "1. events/s, one applier (RQ: no-op jobs/s)",
            "system": "rq",
            "value": round(rq.per_second),
        },
        {
            "workload": "1. Redis round trips per event (RQ: per job)",
            "system": "orchestrator",
            "value": round(orch.round_trips_per_item, 4),
            "target": f"<= {TRIPS_TARGET}",
            "met": orch.round_trips_per_item <= TRIPS_TARGET,
        },
        {
            "workload": "1. Redis round trips per event (RQ: per job)",
            "system": "rq",
            "value": round(rq.round_trips_per_item, 2),
        },
    ]
    details = {
        "orchestrator": orch.as_dict(),
        "rq": rq.as_dict(),
        "runs_per_second": {
            "orchestrator": [round(m.per_second, 1) for m in orch_runs],
            "rq": [round(m.per_second, 1) for m in rq_runs],
        },
    }
    return {"rows": rows, "details": details, "extra": (orch, rq)}


def flows(args: argparse.Namespace) -> dict[str, Any]:
    """Its rows, and after the throughput line the Redis round trips per step over that
    run (counted on the server: bench.flows.trips), then issue #17's publishing lines."""
    result = run_isolated("flows", args.quick, LIMITS[_mode(args)]["flows"])
    rows = list(result.get("rows", []))
    throughput = [r for r in rows if "workflows/s" in str(r.get("workload"))]
    publishing = [r for r in rows if str(r.get("workload")).startswith(PUBLISHING)]
    rest = [r for r in rows if r not in throughput and r not in publishing]
    trips = trips_rows(result.get("details", {}))
    return {**result, "rows": [*throughput, *trips, *publishing, *rest]}


def loaded(args: argparse.Namespace) -> dict[str, Any]:
    return run_isolated("loaded", args.quick, LIMITS[_mode(args)]["flows"])


def notifications(args: argparse.Namespace) -> dict[str, Any]:
    return run_isolated("notify", args.quick, LIMITS[_mode(args)]["notify"])


def fan(args: argparse.Namespace) -> dict[str, Any]:
    return run_isolated("fan", args.quick, LIMITS[_mode(args)]["fan"])


def memory(args: argparse.Namespace) -> dict[str, Any]:
    from bench.memory import measure_memory

    with private_redis() as server:
        instances, warmup = MEMORY[_mode(args)]
        return measure_memory(server.url, instances=instances, warmup=warmup)


def scale(args: argparse.Namespace) -> dict[str, Any]:
    from bench.scale import measure_scale

    sizes = SCALE[_mode(args)]
    return measure_scale(
        sizes=sizes.sizes, live=sizes.live, singles=sizes.singles, repeats=sizes.repeats
    )


def startup(args: argparse.Namespace) -> dict[str, Any]:
    from bench.startup import measure_startup

    return measure_startup(runs=STARTUP_RUNS[_mode(args)], peers=not args.quick)


WORKLOADS = (
    Workload("applier", "1", "events applied per second, one applier", applier_vs_rq),
    Workload("flows", "2", "3-step workflows: throughput and latency (bench.flows)", flows),
    Workload("loaded", "2", "the same beside a busy core (bench.flows.load)", loaded),
    Workload("notify", "4", "notifications per second (bench.notify_rate)", notifications),
    Workload("memory", "5", "Redis memory per finished instance", memory),
    Workload("scale", "5", "apply latency with 1k to 1M instances stored", scale),
    Workload("startup", "6", "command-line start-up", startup),
    Workload("fan", "7", "fan-out/fan-in and a wide map (bench.fan)", fan),
)
NAMES = tuple(w.name for w in WORKLOADS)


def run(workload: Workload, args: argparse.Namespace) -> Outcome:
    print(f"[{workload.number}] {workload.name}: {workload.title} ...", file=sys.stderr, flush=True)
    begin = time.perf_counter()
    try:
        result = workload.run(args)
    except NotRun as exc:
        return _failed(workload, begin, f"not run: {exc}")
    except Exception as exc:  # one workload failing must not take the others down
        traceback.print_exc(file=sys.stderr)
        failed = _failed(workload, begin, f"not run: {type(exc).__name__}: {exc}")
        failed.crashed = True
        return failed
    seconds = time.perf_counter() - begin
    print(f"[{workload.number}] {workload.name}: {seconds:.1f} s", file=sys.stderr, flush=True)
    outcome = Outcome(
        workload,
        seconds,
        rows=list(result.get("rows", [])),
        details=dict(result.get("details", {})),
        extra=result.get("extra"),
    )
    outcome.lines = lines(outcome.rows, workload.number)
    if not outcome.lines:
        outcome.lines = [not_run(workload.number, workload.title, "no figures returned")]
    return outcome


def _failed(workload: Workload, begin: float, reason: str) -> Outcome:
    print(f"[{workload.number}] {workload.name}: {reason}", file=sys.stderr, flush=True)
    outcome = Outcome(workload, time.perf_counter() - begin, error=reason)
    outcome.lines = [not_run(workload.number, workload.title, reason)]
    return outcome


def _mode(args: argparse.Namespace) -> str:
    return "quick" if args.quick else "full"


def _best(runs: list[Measurement]) -> Measurement:
    return max(runs, key=lambda m: m.per_second)

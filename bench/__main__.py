"""python -m bench [--quick] [--only NAMES] [--json PATH] [--details]: the whole suite.

Runs issue #6's workloads in turn, each on private redis-servers it starts
and stops itself, and prints one table: every workload, the engine's figure
next to raw RQ, Celery and Dramatiq where they were measured, the target,
and whether it is met. Figures only: nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import suite
from bench.apply_rate import PHASES
from bench.counting import ping_usec
from bench.measure import Measurement
from bench.report import (
    machine,
    print_commands,
    print_fan,
    print_flow_trips,
    print_machine,
    print_memory,
    print_notes,
    print_phases,
    print_scale,
    print_startup,
    print_summary,
    print_table,
    ratios,
)
from bench.targets import as_dict
from support.redis_server import private_redis

FULL = {"events": 20_000, "instances": 200, "jobs": 2_000}
QUICK = {"events": 2_000, "instances": 20, "jobs": 500}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, no peers: proves the suite still runs (CI), about a minute",
    )
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated workloads to run, of: {', '.join(suite.NAMES)}",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument(
        "--details",
        action="store_true",
        help="also print each workload's own figures (applier phases, commands, memory, ...)",
    )
    workload1 = parser.add_argument_group("workload 1 (applier vs raw RQ)")
    workload1.add_argument("--events", type=int, help="tick events to apply (default 20000)")
    workload1.add_argument("--instances", type=int, help="counter instances (default 200)")
    workload1.add_argument("--jobs", type=int, help="RQ jobs (default 2000)")
    workload1.add_argument("--partitions", type=int, default=8, help="inbox partitions (default 8)")
    workload1.add_argument(
        "--batch-size",
        type=int,
        default=200,
        help="applier batch size, per partition (default 200)",
    )
    workload1.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each measurement; the fastest is reported (default 1)",
    )
    workload1.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=25,
        default=0,
        metavar="LINES",
        help="after the measurements, one more applier run under cProfile",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    for name in ("events", "instances", "jobs", "partitions", "batch_size", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    names = [n.strip() for n in (args.only or "").split(",") if n.strip()]
    if unknown := sorted(set(names) - set(suite.NAMES)):
        parser.error(f"unknown workloads {', '.join(unknown)}; known: {', '.join(suite.NAMES)}")
    args.names = names or list(suite.NAMES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    began = time.perf_counter()
    with private_redis() as server:
        info = machine(server.version, ping_usec(server.url))
    print_machine(info)
    print(
        f"mode: {'quick' if args.quick else 'full'}; workloads: {', '.join(args.names)}",
        flush=True,
    )
    outcomes = [suite.run(w, args) for w in suite.WORKLOADS if w.name in args.names]
    total = time.perf_counter() - began
    if args.details:
        _print_details(outcomes)
    lines = [line for outcome in outcomes for line in outcome.lines]
    print()
    print_summary(lines)
    print("\nnotes:")
    print_notes(lines)
    timings = ", ".join(f"{o.workload.name} {o.seconds:.0f} s" for o in outcomes)
    print(f"\ntotal {total:.0f} s ({timings})")
    if args.json:
        figures: dict[str, Any] = {
            "machine": info,
            "parameters": {
                "quick": args.quick,
                "only": args.names,
                "events": args.events,
                "instances": args.instances,
                "jobs": args.jobs,
                "partitions": args.partitions,
                "batch_size": args.batch_size,
                "repeat": args.repeat,
            },
            "total_seconds": round(total, 1),
            "table": [as_dict(line) for line in lines],
            "workloads": {
                o.workload.name: {
                    "number": o.workload.number,
                    "title": o.workload.title,
                    "seconds": round(o.seconds, 1),
                    "error": o.error,
                    "rows": o.rows,
                    "details": o.details,
                }
                for o in outcomes
            },
        }
        applier = next((o for o in outcomes if o.workload.name == "applier" and o.extra), None)
        if applier is not None:
            orch, rq = applier.extra
            figures["workloads"]["applier"]["ratio_orchestrator_to_rq"] = ratios(orch, rq)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    if crashed := [o.workload.name for o in outcomes if o.crashed]:
        print(f"\nerror: workloads crashed: {', '.join(crashed)}", file=sys.stderr)
        return 1  # a crash is a bug: CI's quick run must not pass over it
    return 0


def _print_details(outcomes: list[suite.Outcome]) -> None:
    for outcome in outcomes:
        name = outcome.workload.name
        if outcome.error:
            continue
        print(f"\n== {outcome.workload.number}. {outcome.workload.title} ==")
        if name == "applier" and outcome.extra:
            orch, rq = outcome.extra
            _print_applier(orch, rq)
        elif name == "flows":
            print_flow_trips(outcome.details)
        elif name == "memory":
            print_memory(outcome.details)
        elif name == "scale":
            print_scale(outcome.details)
        elif name == "startup":
            print_startup(outcome.details)
        elif name == "fan":
            print_fan(outcome.details)
        else:
            print("(its details are in the JSON figures, --json PATH)")


def _print_applier(orch: Measurement, rq: Measurement) -> None:
    print_table(orch, rq)
    print()
    print_phases(orch, PHASES)
    print()
    print_commands(orch, rq)
    print(
        "\nround trips: counted on the client (calls of Connection.send_packed_command); "
        "commands: INFO commandstats;\nserver CPU: INFO cpu (used_cpu_user + used_cpu_sys), "
        "all over the timed part only"
    )


if __name__ == "__main__":
    sys.exit(main())

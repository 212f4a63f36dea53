"""python -m bench [--quick] [--json PATH]: the applier against a raw RQ baseline.

Starts a private redis-server, measures one Applier applying no-op `tick`
events and one RQ SimpleWorker running no-op jobs, prints the two side by
side and stops the server. Figures only: nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.apply_rate import PHASES, measure_applier
from bench.counting import ping_usec
from bench.measure import Measurement
from bench.redis_server import private_redis
from bench.report import (
    machine,
    print_commands,
    print_machine,
    print_phases,
    print_table,
    ratios,
)
from bench.rq_baseline import measure_rq

FULL = {"events": 20_000, "instances": 200, "jobs": 5_000}
QUICK = {"events": 2_000, "instances": 20, "jobs": 500}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, a few seconds in all (CI: proves it still runs)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--events", type=int, help="tick events to apply (default 20000)")
    parser.add_argument("--instances", type=int, help="counter instances (default 200)")
    parser.add_argument("--jobs", type=int, help="RQ jobs (default 5000)")
    parser.add_argument("--partitions", type=int, default=8, help="inbox partitions (default 8)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=200,
        help="applier batch size, per partition (default 200)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each measurement; the fastest is reported (default 1)",
    )
    parser.add_argument(
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
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with private_redis() as server:
        info = machine(server.version, ping_usec(server.url))
        print_machine(info)
        print(
            f"orchestrator: {args.events} tick events over {args.instances} counter instances, "
            f"one Applier, {args.partitions} partitions, batch size {args.batch_size}; "
            f"RQ: {args.jobs} no-op jobs, one SimpleWorker, burst, JSON serializer"
        )
        orch_runs = [
            measure_applier(
                server.url,
                events=args.events,
                instances=args.instances,
                partitions=args.partitions,
                batch_size=args.batch_size,
            )
            for _ in range(args.repeat)
        ]
        rq_runs = [measure_rq(server.url, jobs=args.jobs) for _ in range(args.repeat)]
        orch, rq = _best(orch_runs), _best(rq_runs)
        print()
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
        if args.repeat > 1:
            print(
                f"fastest of {args.repeat} runs; items/s of every run: orchestrator "
                f"{_rates(orch_runs)}, RQ {_rates(rq_runs)}"
            )
        if args.profile:
            measure_applier(
                server.url,
                events=args.events,
                instances=args.instances,
                partitions=args.partitions,
                batch_size=args.batch_size,
                profile_lines=args.profile,
            )
    if args.json:
        figures: dict[str, Any] = {
            "machine": info,
            "parameters": {
                "quick": args.quick,
                "events": args.events,
                "instances": args.instances,
                "jobs": args.jobs,
                "partitions": args.partitions,
                "batch_size": args.batch_size,
                "repeat": args.repeat,
            },
            "orchestrator": orch.as_dict(),
            "rq": rq.as_dict(),
            "ratio_orchestrator_to_rq": ratios(orch, rq),
            "runs_per_second": {
                "orchestrator": [round(m.per_second, 1) for m in orch_runs],
                "rq": [round(m.per_second, 1) for m in rq_runs],
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


def _best(runs: list[Measurement]) -> Measurement:
    return max(runs, key=lambda m: m.per_second)


def _rates(runs: list[Measurement]) -> str:
    return ", ".join(f"{m.per_second:,.0f}" for m in runs)


if __name__ == "__main__":
    sys.exit(main())

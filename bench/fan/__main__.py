"""`python -m bench.fan`: the fan workload alone, its rows and notes."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.fan import ALL, QUICK_SYSTEMS
from bench.fan.run import FULL, QUICK, run_fan
from bench.targets import show


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fan", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes; the engine only")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--logs", type=Path, help="keep the worker processes' logs here")
    parser.add_argument("--systems", help=f"comma-separated subset of: {', '.join(ALL)}")
    args = parser.parse_args()
    if args.systems:
        systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        if unknown := set(systems) - set(ALL):
            parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    else:
        systems = list(QUICK_SYSTEMS if args.quick else ALL)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before: {load}; nproc {os.cpu_count()}", flush=True)
    result = run_fan(systems, QUICK if args.quick else FULL, args.logs)
    for row in result["rows"]:
        print(f"{row['system']:>12}  {row['workload']}: {show(row['value'])}")
        print(f"{'':>12}  {row['note']}")
    for name, found in result["details"]["systems"].items():
        if "skipped" in found or "error" in found:
            print(f"{name}: {found.get('skipped') or 'FAILED: ' + found['error']}")
    if "error" in result["details"].get("map", {}):
        print(f"map: FAILED: {result['details']['map']['error']}")
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"written: {args.json}")


if __name__ == "__main__":
    main()

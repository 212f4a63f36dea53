"""`python -m bench.fan`: the fan workload alone, its rows and notes."""

from __future__ import annotations

import json
import os

from bench.fan import ALL, QUICK_SYSTEMS
from bench.fan.run import FULL, QUICK, run_fan
from bench.systems_cli import parse
from bench.targets import show


def main() -> None:
    args, systems = parse(
        "python -m bench.fan", __doc__, "small sizes; the engine only", ALL, QUICK_SYSTEMS
    )
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

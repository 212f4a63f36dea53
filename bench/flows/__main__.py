"""`python -m bench.flows`: run the workloads and print the systems side by side."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

from bench.flows import ALL, QUICK_SYSTEMS
from bench.flows.run import FULL, QUICK, run_flows
from bench.flows.trips import commands_table, trips_rows
from bench.report import print_publishing
from bench.systems_cli import parse
from bench.targets import PUBLISHING_SYSTEM


def table(result: dict[str, Any]) -> str:
    all_rows = [*result["rows"], *trips_rows(result["details"])]
    systems = list(dict.fromkeys(row["system"] for row in all_rows))
    workloads = list(dict.fromkeys(row["workload"] for row in all_rows))
    cells = {(row["workload"], row["system"]): row for row in all_rows}

    def show(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, list):
            return " / ".join(show(v) for v in value)
        return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"

    header = ["workload", *systems]
    lines = [
        [w, *(show(cells[(w, s)]["value"]) if (w, s) in cells else "" for s in systems)]
        for w in workloads
    ]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def fmt(cols: list[str]) -> str:
        first = cols[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cols[1:], widths[1:], strict=True))])

    out = [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines), ""]
    for name, found in result["details"]["systems"].items():
        if "skipped" in found or "error" in found:
            out.append(f"{name}: {found.get('skipped') or 'FAILED: ' + found['error']}")
            continue
        out.append(f"{name}: {found['workers']}; {found['seconds']} s in all")
    out.append("")
    for row in all_rows:
        if row["note"]:
            out.append(f"{row['system']:>12}  {row['workload']}: {row['note']}")
    return "\n".join(out)


def main() -> None:
    args, systems = parse(
        "python -m bench.flows",
        __doc__,
        "small sizes; the engine (and its publishing variant, throughput only) and RQ only",
        (*ALL, PUBLISHING_SYSTEM),
        QUICK_SYSTEMS,
    )
    sizes = QUICK if args.quick else FULL
    if args.systems:  # those named only: no publishing variant alongside the engine
        sizes = replace(sizes, alongside=())
    result = run_flows(systems, sizes, args.logs)
    print(table(result))
    if commands := commands_table(result["details"]):
        print(f"\n{commands}")
    if PUBLISHING_SYSTEM in result["details"]["systems"]:
        print()
        print_publishing(result["details"]["systems"])
    print(f"\nload average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()

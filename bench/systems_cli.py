"""The command line `python -m bench.flows` and `python -m bench.fan` share: which
systems to run, the sizes, where logs and figures go."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path


def parse(
    prog: str, doc: str | None, quick_help: str, every: Sequence[str], quick: Sequence[str]
) -> tuple[argparse.Namespace, list[str]]:
    """The parsed options and the systems to run; prints the load average before."""
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--logs", type=Path, help="keep the worker processes' logs here")
    parser.add_argument("--systems", help=f"comma-separated subset of: {', '.join(every)}")
    args = parser.parse_args()
    if args.systems:
        systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        if unknown := set(systems) - set(every):
            parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    else:
        systems = list(quick if args.quick else every)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before: {load}; nproc {os.cpu_count()}", flush=True)
    return args, systems

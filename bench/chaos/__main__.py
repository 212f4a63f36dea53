"""Run the chaos scenarios, check every run, print one table of pass figures.

    python -m bench.chaos [--quick | --ci] [--scenario NAME] [--json PATH] [--keep]

Runs the fault-injection scenarios (bench/chaos/catalog.py) on a private
Redis, SMTP server and Prism, checks every run offline (bench/chaos/checker.py)
and prints one table: scenario, figure, value, target, pass/FAIL. Exits 1
when any figure fails. A failing scenario's records (journal, fault log,
worker logs, Redis files, the snapshot as JSON) are kept and their folder
printed; --keep keeps them all. --ci runs a small subset at tiny sizes (about
two minutes) that judges no timing and no duplicate share: for a CI job.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.chaos.catalog import CI, QUICK, SCENARIOS
from bench.chaos.scenarios import Outcome, discard
from bench.chaos.table import render

EXAMPLES = 10  # violations of each kind shown and written per scenario


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes, about 7 minutes in all")
    size.add_argument(
        "--ci",
        action="store_true",
        help=f"tiny sizes of {', '.join(CI)}, about two minutes; no timing judged",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this one (repeatable); default: all (--quick: all but the everysec one)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep every run's records")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    size = "ci" if args.ci else "quick" if args.quick else "full"
    names = args.scenario or list({"ci": CI, "quick": QUICK, "full": SCENARIOS}[size])
    outcomes: list[Outcome] = []
    began = time.monotonic()
    for name in names:
        print(
            f"scenario {name}{'' if size == 'full' else f' ({size})'}", file=sys.stderr, flush=True
        )
        outcome = SCENARIOS[name](size)
        for check, found in sorted(outcome.report.violations.items()):
            for message in found[:EXAMPLES]:
                print(f"  {check}: {message}", file=sys.stderr)
        if not outcome.passed or args.keep:
            (outcome.folder / "report.json").write_text(json.dumps(result(outcome), indent=1))
        discard(outcome, args.keep)
        outcomes.append(outcome)
    print(render(outcomes))
    print(f"{len(outcomes)} scenarios in {time.monotonic() - began:.0f}s")
    if args.json:
        args.json.write_text(json.dumps([result(o) for o in outcomes], indent=1))
    return 0 if all(o.passed for o in outcomes) else 1


def result(outcome: Outcome) -> dict[str, Any]:
    return {
        "scenario": outcome.scenario,
        "passed": outcome.passed,
        "seconds": round(outcome.seconds, 1),
        "rows": [dataclasses.asdict(r) for r in outcome.rows],
        "figures": outcome.report.figures,
        "violations": {k: v[:EXAMPLES] for k, v in outcome.report.violations.items() if v},
    }


if __name__ == "__main__":
    sys.exit(main())

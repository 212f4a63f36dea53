"""The flows rows under load (issue #18): every system measured again beside a process
that keeps one core busy, the same for each, as a machine shared with other work is.

The engine's step crosses two processes (a task worker, then the applier) where the
peers' cross one; on a busy machine each crossing waits for a core, so the busy core
shows what the quiet rows cannot: whether the lead holds when the machine is not ours.

The load is a Python loop pinned to the first core (sched_setaffinity), started before
the first system and ended after the last; the systems' processes are not pinned, so
the scheduler shares that core between the loop and whoever else wants it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from bench.targets import UNDER_LOAD

SYSTEMS = ("orchestrator", "rq", "celery", "dramatiq")  # the engine's default and its peers
QUICK_NOTE = "the rows under load run in full runs only (python -m bench --only loaded)"


@contextlib.contextmanager
def busy_core(core: int = 0) -> Iterator[int]:
    """A process spinning on `core` while the block runs; its pid."""
    spin = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        yield spinner.pid
    finally:
        spinner.kill()
        spinner.wait()


def under_load(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows relabelled: `under load: <workload>`, judged by their own targets."""
    return [{**row, "workload": f"{UNDER_LOAD} {row['workload']}"} for row in rows]


def measure_loaded(quick: bool) -> dict[str, Any]:
    """{"rows", "details"}: the flows throughput and latency rows of the engine and its
    peers (those importable), measured beside a busy core; none in a quick run."""
    if quick:
        print(QUICK_NOTE, file=sys.stderr)
        return {"rows": [], "details": {"skipped": QUICK_NOTE}}
    from bench.flows.run import FULL, run_flows

    sizes = replace(FULL, alongside=(), overhead_rounds=0)
    with busy_core() as pid:
        result = run_flows(list(SYSTEMS), sizes)
    details = {**result["details"], "load": f"a Python loop pinned to core 0 (pid {pid})"}
    flows = [
        r for r in result["rows"] if "workflows/s" in r["workload"] or "latency" in r["workload"]
    ]
    return {"rows": under_load(flows), "details": details}

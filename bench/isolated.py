"""Running a workload in a child process, with a time limit.

Workloads 2-4 and 7 start servers and worker processes of their own and wait on
them; a hang there must not hang the suite (nor CI). The child imports the
workload's module, runs it and writes its result as JSON. Past the limit it
gets SIGINT, a KeyboardInterrupt in its code, whose `finally` blocks stop
what it started; SIGKILL if it is still there 30 s later. Its output goes to
the suite's stderr, so that stdout keeps only the table.

    python -m bench.isolated NAME RESULT.json [--quick]
"""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# name -> module, function(quick: bool) -> {"rows": [...], "details": {...}}
WORKLOADS = {
    "flows": ("bench.flows", "measure_flows"),
    "loaded": ("bench.flows.load", "measure_loaded"),
    "notify": ("bench.notify_rate", "measure_notifications"),
    "fan": ("bench.fan", "measure_fan"),
}
GRACE = 30.0  # seconds between SIGINT and SIGKILL


class NotRun(RuntimeError):
    """The workload produced no figures; the message says why."""


def run_isolated(name: str, quick: bool, limit: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-isolated-") as folder:
        result = Path(folder) / "result.json"
        argv = [sys.executable, "-m", "bench.isolated", name, str(result)]
        child = subprocess.Popen([*argv, "--quick"] if quick else argv, cwd=ROOT, stdout=sys.stderr)
        try:
            child.wait(limit)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise NotRun(f"stopped after its time limit of {limit:.0f} s") from None
        found: dict[str, Any] = json.loads(result.read_text()) if result.exists() else {}
    if "error" in found:
        raise NotRun(found["error"])
    if child.returncode != 0 or "rows" not in found:
        raise NotRun(f"its process exited with {child.returncode} and no figures")
    return found


def main(argv: list[str]) -> int:
    name, path = argv[0], Path(argv[1])
    quick = "--quick" in argv[2:]
    module_name, function = WORKLOADS[name]
    try:
        module = importlib.import_module(module_name)
        found = getattr(module, function)(quick)
    except ModuleNotFoundError as exc:
        path.write_text(json.dumps({"error": f"module {exc.name} not found"}))
        return 1
    except Exception as exc:
        traceback.print_exc()
        path.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    path.write_text(json.dumps(found, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

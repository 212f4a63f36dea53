"""Workload 6: how long the command line takes, `orchestrator --help` and `orchestrator status ID`.

The installed console script (next to this interpreter: `.venv/bin/orchestrator`)
runs as a subprocess, as a user runs it: wall time from spawn to exit, the
median of N runs after one untimed run (which writes the bytecode caches).
`status` reads a real finished instance, made by the engine in this process,
on a private redis-server named by REDIS_URL; ORCHESTRATOR_WORKFLOWS names
the bench's one small workflow module, as a deployment names its own.

For comparison, the peers' own command lines (`rq --help`, `celery --help`,
`dramatiq --help`, and `rq info` against the same server for `status`), and
the floor: `python -c pass`. `python -X importtime -c "import cli.main"` says
where the time goes; its heaviest imports are in the details.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.inprocess import Engine
from bench.three_steps import NAME
from support.redis_server import private_redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HELP_TARGET = 0.15  # seconds (issue #18)
STATUS_TARGET = 0.25
WORKLOAD = "6"
PEERS = {"RQ": "rq", "Celery": "celery", "Dramatiq": "dramatiq"}


def measure_startup(*, runs: int, peers: bool = True) -> dict[str, Any]:
    script = BIN / "orchestrator"
    if not script.exists():
        raise RuntimeError(f"no console script at {script}: pip install -e . first")
    with private_redis() as server, tempfile.TemporaryDirectory() as home:
        engine = Engine(server.url)
        try:
            instance = engine.finish(NAME, 1)[0]
        finally:
            engine.close()
        env = _env(server.url, home)
        ours = {
            "help": _median([str(script), "--help"], env, runs, expect="Usage"),
            "status": _median([str(script), "status", instance], env, runs, expect=instance),
        }
        theirs: dict[str, dict[str, float]] = {"help": {}, "status": {}}
        if peers:
            for system, command in PEERS.items():
                if (BIN / command).exists():
                    theirs["help"][system] = _median([str(BIN / command), "--help"], env, runs)
            if (BIN / "rq").exists():
                rq_info = [str(BIN / "rq"), "info", "--url", server.url]
                theirs["status"]["RQ"] = _median(rq_info, env, runs)
        floor = _median([sys.executable, "-c", "pass"], env, runs)
        imports = _imports(env)
    rows = []
    for what, command, target in (
        ("help", "orchestrator --help", HELP_TARGET),
        ("status", "orchestrator status ID", STATUS_TARGET),
    ):
        label = f"{WORKLOAD}. start-up: {command}"
        rows.append(
            {
                "workload": label,
                "system": "orchestrator",
                "value": round(ours[what], 3),
                "unit": "s",
                "target": f"<= {target} s",
                "met": ours[what] <= target,
                "note": f"median of {runs} runs; python -c pass: {floor:.3f} s",
            }
        )
        for system, seconds in theirs[what].items():
            note = "rq info (queues, workers)" if what == "status" else ""
            rows.append(
                {
                    "workload": label,
                    "system": system,
                    "value": round(seconds, 3),
                    "unit": "s",
                    "note": note,
                }
            )
    details = {
        "runs": runs,
        "seconds": {k: round(v, 4) for k, v in ours.items()},
        "peers_seconds": {k: {s: round(v, 4) for s, v in d.items()} for k, d in theirs.items()},
        "python_floor_seconds": round(floor, 4),
        "import_cli_main": imports,
    }
    return {"rows": rows, "details": details}


def _env(url: str, home: str) -> dict[str, str]:
    """The commands' environment. Bytecode is cached, as on a user's machine: an
    environment that says PYTHONDONTWRITEBYTECODE (this machine's does) would have every
    run compile the modules that no installer compiled (the project's own, in an editable
    install: some 60 ms a command here) while the peers' arrive compiled by pip. The
    caches go under `home` (PYTHONPYCACHEPREFIX), for every command alike, written by the
    untimed first run; nothing is written into the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "ORCHESTRATOR_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        REDIS_URL=url,
        ORCHESTRATOR_WORKFLOWS="bench.three_steps",
        ORCHESTRATOR_HOME=home,
        PYTHONPATH=str(ROOT),
        PYTHONPYCACHEPREFIX=str(Path(home) / "pycache"),
    )
    return env


def _median(argv: list[str], env: dict[str, str], runs: int, expect: str = "") -> float:
    """Median wall time of `runs` runs, after one untimed run; each must succeed."""
    times: list[float] = []
    for number in range(runs + 1):
        begin = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - begin
        if done.returncode != 0 or expect not in done.stdout:
            raise RuntimeError(
                f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}"
            )
        if number:
            times.append(elapsed)
    return statistics.median(times)


def _imports(env: dict[str, str], top: int = 12) -> dict[str, Any]:
    """The heaviest imports of `import cli.main`, by cumulative time (-X importtime)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import cli.main"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    rows: list[tuple[int, str]] = []  # cumulative microseconds, module
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or "cumulative" in line:
            continue
        rows.append((int(parts[1]), parts[2].strip()))
    total = max((c for c, n in rows if n == "cli.main"), default=0)
    ours = ("cli", "orchestrator", "notifiers", "workflows", "bench")
    packages = sorted(((c, n) for c, n in rows if "." not in n and n not in ours), reverse=True)
    own = sorted(((c, n) for c, n in rows if n.split(".")[0] in ours), reverse=True)
    return {
        "total_ms": round(total / 1000, 1),
        "packages_ms": {n: round(c / 1000, 1) for c, n in packages[:top]},
        "own_modules_ms": {n: round(c / 1000, 1) for c, n in own[:top]},
    }

"""Worker processes: separate OS processes, each in its own session, stopped by id.

Each command runs in a new session (process group) so that stopping it also
stops whatever it forked (the engine's supervisor and its children, Dramatiq's
worker processes, RQ work-horses); nothing else is ever signalled. Output goes
to a log file, shown when a run goes wrong.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Workers:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        log = self.folder / f"{name}.log"
        merged = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=merged,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append((process, log))

    def python(self, name: str, args: list[str], env: Mapping[str, str]) -> None:
        self.spawn(name, [sys.executable, *args], env)

    def logs(self) -> list[Path]:
        return sorted(self.folder.glob("*.log"))

    def dead(self) -> list[str]:
        """Logs' tails of the processes that exited already (a worker must not)."""
        return [
            f"{log.name} exited {p.returncode}: {tail(log)}"
            for p, log in self.processes
            if p.poll() is not None
        ]

    def stop(self, grace: float = 10.0) -> None:
        for process, _ in self.processes:
            _signal_group(process, signal.SIGTERM)
        for process, _ in self.processes:
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        for process, _ in self.processes:  # children left behind by a leader that exited
            _signal_group(process, signal.SIGKILL)
        self.processes.clear()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])

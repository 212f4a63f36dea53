"""Worker processes for the notification benchmark, and the CPU time they spend.

Each worker command runs in a session of its own, so that stopping it stops what
it forked (the engine's supervisor and its children); nothing else is ever
signalled. CPU time is read from /proc (Linux): user + system seconds of a
process, all its threads included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


class Workers:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> int:
        """Start a command; returns its pid. Its output goes to NAME.log in the folder."""
        log = self.folder / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append((process, log))
        return process.pid

    def dead(self) -> list[str]:
        """What the workers that exited (none should) last wrote."""
        return [
            f"{log.name} exited {p.returncode}: {log.read_text(errors='replace')[-600:]}"
            for p, log in self.processes
            if p.poll() is not None
        ]

    def stop(self) -> None:
        for process, _ in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK

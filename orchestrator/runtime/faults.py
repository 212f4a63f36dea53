"""Named crash points, for tests that must kill a process at an exact moment.

A process started with ORCHESTRATOR_CRASH_AT=before_commit (say) kills
itself with SIGKILL when it reaches that point, as a power cut would. Off
unless the setting names the point.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str, armed: frozenset[str]) -> None:
    if name in armed:
        os.kill(os.getpid(), signal.SIGKILL)

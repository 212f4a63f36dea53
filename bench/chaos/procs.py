"""Processes by id: children, whole trees, and killing them all at the same instant.

Children come from support.procs (/proc, every thread of the parent, zombies
left out). Nothing is ever found or killed by name.

A tree is killed frozen first: SIGSTOP from the root down (a stopped process
forks nothing more), a second sweep for a child forked in between, then
SIGKILL to all; so no work-horse escapes the kill of its worker. The harness
makes itself a child subreaper, so orphans of a killed supervisor are
re-parented to it and can be reaped (`reap`) instead of lingering as zombies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from pathlib import Path

from support.procs import alive, children

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    frontier = children(pid)
    while frontier:
        child = frontier.pop()
        if child not in out:
            out.append(child)
            frontier += children(child)
    return out


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_trees(roots: list[int]) -> list[int]:
    """SIGKILL every process of the trees under `roots`, frozen first; returns the pids."""
    stopped: list[int] = []
    for _ in range(2):  # the second sweep catches a fork that raced the first
        frontier = [*roots, *(c for p in stopped for c in children(p))]
        while frontier:
            pid = frontier.pop(0)
            if pid in stopped or not alive(pid):
                continue
            if _signal(pid, signal.SIGSTOP):
                stopped.append(pid)
                frontier += children(pid)
    for pid in stopped:
        _signal(pid, signal.SIGKILL)
    return stopped


def reap(pids: set[int]) -> set[int]:
    """Reap those of `pids` that are dead children of this process; returns the rest."""
    left: set[int] = set()
    for pid in pids:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not (yet) ours: its parent reaps it, or is dying
            if Path(f"/proc/{pid}").exists():
                left.add(pid)
            continue
        if done == 0:
            left.add(pid)
    return left


def terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)

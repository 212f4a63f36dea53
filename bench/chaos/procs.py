"""Processes by id: children, whole trees, and killing them all at the same instant.

Children come from /proc/PID/task/TID/children (every thread of the parent,
as a fork from any thread lands in that thread's list), or, on a kernel
without that file, from the parent field of every /proc/*/stat. Nothing is
ever found or killed by name.

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

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # state, ppid, ...


def alive(pid: int) -> bool:
    """Running or stopped; a zombie is dead."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    found: list[int] = []
    tasks = Path(f"/proc/{pid}/task")
    try:
        threads = list(tasks.iterdir())
    except OSError:
        return []
    listed = False
    for thread in threads:
        try:
            found += [int(c) for c in (thread / "children").read_text().split()]
            listed = True
        except OSError:
            continue
    if not listed:  # no children file on this kernel: the slow way
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                fields = _stat_fields(int(entry.name))
                if fields is not None and int(fields[1]) == pid:
                    found.append(int(entry.name))
    return sorted({c for c in found if alive(c)})


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

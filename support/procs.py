"""A process's children, by pid, for tests and benchmarks that watch a supervisor.

Tests kill a worker's child and wait for its replacement; benchmarks read the
CPU time of each role; the chaos harness kills whole trees. All of them ask the
same question, answered once here (Linux, /proc).

Children come from /proc/PID/task/TID/children of every thread of the parent
(a fork from any thread lands in that thread's list) or, on a kernel without
that file, from the parent field of every /proc/*/stat. A zombie is not a
child any more: it has exited, only its exit status is left to reap. Nothing is
ever found by name.
"""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Running or stopped; a zombie is dead."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The live child processes of a process, by pid (oldest first, barring pid wrap-around);
    [] once it has exited."""
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

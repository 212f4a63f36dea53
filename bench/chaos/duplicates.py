"""duplicates: every task.completed delivered one to three times, reordered, some late.

Two runs of the same orders (same inputs, same start and note schedule), each
on a fresh cluster, with no kill: first fault-free, as the reference; then
with the injector (duplicator.py, a process of its own) appending each
task.completed event to its instance's inbox again 0-2 more times, after a
random delay, so copies land among the instance's later events and many
after it finished. Once every instance is final the injector is told to
stop, delivers what it still holds at its time, and the run settles again
(every copy consumed) before it is collected.

Pass: the common figures; every instance ends in the reference's state,
status and context, through the same states (matched by its business key,
`ref`); no copy moved anything (its event id applied once, nothing applied
after the instance finished, seq numbers still 1..n); and every copy shows
in the history as an entry recorded and ignored.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.chaos.cluster import ROOT, Cluster, Shape, cluster
from bench.chaos.copies import check_copies, compare
from bench.chaos.journal import read_lines
from bench.chaos.model import Report, Snapshot
from bench.chaos.runner import Batch, Chaos, Run, say
from bench.chaos.scenarios import Outcome, Row, _folder, common_rows, health_row, settle_for

SIZES = {  # orders, over seconds, notes within seconds of a start, the injector's wait scale
    "full": (140, 25.0, 8.0, 1.0),
    "quick": (60, 15.0, 8.0, 1.0),
    "ci": (12, 4.0, 3.0, 0.5),
}
SEED = 19
STOP_WITHIN = 60.0  # seconds the injector may take to deliver what it holds (at most ~6 s)


@contextlib.contextmanager
def injector(c: Cluster, log: Path, scale: float) -> Iterator[list[str]]:
    """The duplicator process for this cluster; stopped (SIGTERM, then waited for) at the
    end of the block. Yields a list that receives any trouble it had."""
    keys = c.app.keys
    command = [
        *(sys.executable, "-m", "bench.chaos.duplicator", c.redis_url, str(log)),
        *("--namespace", keys.namespace, "--partitions", str(keys.partitions)),
        *("--seed", str(SEED), "--scale", str(scale)),
    ]
    trouble: list[str] = []
    with (c.folder / "duplicator.log").open("ab") as out:
        process = subprocess.Popen(
            command,
            env=c.pool.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield trouble
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(10)
            trouble.append(f"did not finish within {STOP_WITHIN:.0f}s")
        if code != 0:
            trouble.append(f"exited {code}; see {c.folder / 'duplicator.log'}")


def one_run(
    folder: Path, batch: Batch, settle: float, inject: float | None
) -> tuple[Run, Snapshot, Report, list[str]]:
    """One run on a fresh cluster; with `inject` (the injector's wait scale), copies."""
    folder.mkdir()
    calm = Chaos(every=None, lasts=0.0)
    trouble: list[str] = []
    with cluster(folder, Shape()) as c:
        run = Run(c, seed=SEED)
        if inject is not None:
            with injector(c, folder / "copies.jsonl", inject) as trouble:
                run.drive([batch], calm)
                run.settle(settle)  # every instance final: no task.completed will come
        else:
            run.drive([batch], calm)
        run.settle(settle)  # every copy consumed too
        snapshot, report = run.collect()
    return run, snapshot, report, trouble


def duplicates(size: str) -> Outcome:
    count, over, notes, scale = SIZES[size]
    folder, began = _folder("duplicates"), time.monotonic()
    batch = Batch("dup", count, over, work=0.05, undo_work=0.05, note_within=notes)
    settle = settle_for(size)
    say("  reference run, fault-free")
    _, reference, clean, _ = one_run(folder / "reference", batch, settle, inject=None)
    say("  the same with task.completed delivered 1-3 times")
    run, snapshot, report, trouble = one_run(folder / "copies", batch, settle, inject=scale)
    log = read_lines(folder / "copies" / "copies.jsonl")
    check_copies(report, snapshot, log)
    compare(report, snapshot, reference)
    for problem in trouble:
        report.violations.setdefault("injector", []).append(problem)
    f, v = report.figure, report.violations
    copies, late = f("copies"), f("copies_late")
    events = sum(f(f"delivered_{n}x") for n in (1, 2, 3))
    rows = [
        *common_rows(report, budget=size != "ci"),
        health_row(run),
        Row(
            "reference run (fault-free) clean",
            ", ".join(sorted(clean.flagged)) or "yes",
            "yes",
            clean.ok and clean.figure("final") == count,
        ),
        Row(
            "task.completed copies delivered",
            f"{events:.0f} events: {f('delivered_1x'):.0f}x1, {f('delivered_2x'):.0f}x2, "
            f"{f('delivered_3x'):.0f}x3; {copies:.0f} copies, {f('copies_reordered'):.0f} "
            f"after later events, {late:.0f} after the instance finished"
            + (f"; {len(v['not_followed'])} events not followed" if v["not_followed"] else ""),
            "1-3 each, some late",
            copies > 0 and late > 0 and not v["not_followed"] and not v.get("injector"),
        ),
        Row(
            "final state, status, context as the reference",
            f"{f('identical'):.0f}/{f('compared'):.0f} identical (by ref), "
            f"{len(v['reference_differs'])} differ",
            "all",
            f("identical") == f("compared") == count and not v["reference_differs"],
        ),
        Row(
            "copies applied; entries applied after final",
            f"{len(v['copy_applied'])}; {len(v['applied_after_final'])} "
            f"(of {f('after_final'):.0f} entries after final)",
            "0; 0",
            not v["copy_applied"] and not v["applied_after_final"],
        ),
        Row(
            "copies recorded in the history, ignored",
            f"{f('copies_recorded'):.0f}/{copies:.0f} ({f('late_recorded'):.0f}/{late:.0f} late)",
            "all",
            f("copies_recorded") == copies and not v["copy_unrecorded"],
        ),
    ]
    return Outcome("duplicates", rows, report, time.monotonic() - began, folder)

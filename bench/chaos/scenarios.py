"""The scenarios, their sizes (full, --quick, --ci), and the pass figures each prints.

kill-workers           SIGKILL a random worker child and its work-horse every few
                       seconds (now and then a whole worker, or everything at once),
                       restart; append-only Redis with `appendfsync always`
kill-workers-everysec  the same on `appendfsync everysec` (not in --quick)
self-kill              a task that SIGKILLs its own process on every try, beside
                       ordinary instances: it gets its tries, then fails and compensates;
                       the ordinary instances are timed alone and beside it
compensation           half the instances fail at the last step; slow compensations,
                       kills aimed at task workers and their horses

More scenarios live in their own modules (lost.py: child-kill, outage.py:
redis-restart, misbehave.py: providers, duplicates.py: duplicates, forge.py:
forge-poison, backlog.py: saga-backlog); catalog.py lists them all.

Every scenario prints the common figures (common_rows), among them the steps
done at the sink not undone once: in an instance that compensated, each
compensable step whose task returned at the sink (even after its state was
left) undone by exactly one compensation run (the checker's `unrefunded`).
The kill scenarios also print the published events' figures (published_rows:
the outbox checks of outbox.py; every scenario's checker runs them and lists
what it finds, only the kill scenarios judge them).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos.cluster import Shape, cluster
from bench.chaos.model import Report, Snapshot
from bench.chaos.runner import Batch, Chaos, Run, say
from bench.chaos.workload import SELF_KILL_TRIES

DUPLICATE_TARGET = 0.5  # percent of notifications
SETTLE, SETTLE_QUICK = 120.0, 60.0  # seconds to wait for quiet once the chaos ends: lost
# work is promised back within ~10 s (README), a retry backs off at most 2 s here


def settle_for(size: str) -> float:
    """A deadline only: a run goes on as soon as it is quiet. Sizes are "full", "quick"
    and "ci" (the small subset `--ci` runs: no timing judged); CI's deadline is the
    generous one, for a loaded machine."""
    return SETTLE if size != "quick" else SETTLE_QUICK


@dataclass
class Row:
    figure: str
    value: str
    target: str
    passed: bool


@dataclass
class Outcome:
    scenario: str
    rows: list[Row]
    report: Report
    seconds: float
    folder: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)


def common_rows(report: Report, budget: bool = True) -> list[Row]:
    """The figures every scenario prints. Without `budget` (a CI-sized run, where one
    duplicate is already several percent) the duplicate share is shown, not judged."""
    f, v = report.figure, report.violations
    pct = f("duplicate_percent")
    unexplained = len(v["unexplained_duplicate"])
    effects = [len(v[c]) for c in ("rerun_after_success", "attempts", "unanswered_call")]
    stray = [len(v[c]) for c in ("orphan", "dead_letter", "phantom_notification")]
    stranded = sum(1 for m in v["final"] if " dequeued" in m)
    return [
        Row(
            "instances final",
            f"{f('final'):.0f}/{f('instances'):.0f}"
            + (f" ({stranded} on a job a dead worker dequeued)" if stranded else ""),
            "all",
            f("final") == f("instances") > 0,
        ),
        Row(
            "duplicate transitions",
            f"{f('duplicate_transitions'):.0f}",
            "0",
            f("duplicate_transitions") == 0,
        ),
        Row("seq gaps or repeats", f"{len(v['sequence'])}", "0", not v["sequence"]),
        Row("replay differs from stored", f"{len(v['replay'])}", "0", not v["replay"]),
        Row(
            "lost acknowledged events",
            f"{f('lost_acknowledged'):.0f} of {f('acknowledged'):.0f}",
            "0",
            f("lost_acknowledged") == 0,
        ),
        Row(
            "lost notifications",
            f"{f('lost_notifications'):.0f} of {f('notifications'):.0f}",
            "0",
            f("lost_notifications") == 0,
        ),
        Row(
            "duplicate notifications",
            f"{f('duplicate_notifications'):.0f} ({pct:.2f}%), {unexplained} outside the window",
            f"<= {DUPLICATE_TARGET}%, 0 outside" if budget else "0 outside (% not judged)",
            (pct <= DUPLICATE_TARGET or not budget) and unexplained == 0,
        ),
        Row(
            "compensations wrong (count/order)",
            f"{len(v['compensation'])} of {f('compensated_instances'):.0f} compensated",
            "0",
            not v["compensation"],
        ),
        Row(
            "double refunds at the sink",
            f"{f('double_refunds'):.0f}",
            "0",
            not v["double_refund"],
        ),
        Row(
            "steps done at the sink not undone once",
            f"{len(v['unrefunded'])}: {f('not_undone'):.0f} never, {f('undone_twice'):.0f} "
            f"twice (in {f('compensating_instances'):.0f} compensating instances)",
            "0",
            not v["unrefunded"],
        ),
        Row(
            "task reruns not after a lost try",
            f"{sum(effects)} (of {f('repeated_calls'):.0f} repeats in {f('task_calls'):.0f} calls)",
            "0",
            sum(effects) == 0,
        ),
        Row("orphans, dead letters, phantoms", "/".join(map(str, stray)), "0/0/0", not any(stray)),
    ]


def published_rows(report: Report) -> list[Row]:
    """The published events against the histories (outbox.py): every one counted, each
    start and transition's lifecycle event and each state entry's business events
    exactly once, none without its step, in the history's order."""
    f, v = report.figure, report.violations
    if "published" not in report.figures:
        return [Row("published events", "not collected", "= expected", False)]
    counted = (
        f"{f('published'):.0f} of {f('published_expected'):.0f} expected "
        f"({f('published_transitions'):.0f} started/transitioned, "
        f"{f('published_business'):.0f} business, {f('published_lifecycle_other'):.0f} other)"
    )
    judged = (
        ("duplicates", "published_duplicates", "published_duplicate"),
        ("missing", "published_missing", "published_missing"),
        ("orphans", "published_orphans", "published_orphan"),
        ("out of order", "published_out_of_order", "published_order"),
    )
    return [
        Row(
            "published events", counted, "= expected", f("published") == f("published_expected") > 0
        ),
        *(
            Row(f"published {name}", f"{f(figure):.0f}", "0", f(figure) == 0 and not v[check])
            for name, figure, check in judged
        ),
    ]


def health_row(run: Run) -> Row:
    return Row(
        "worker exits nobody caused, tracebacks",
        f"{len(run.unexpected)}, {run.tracebacks}",
        "0, 0",
        not run.unexpected and not run.tracebacks,
    )


def fault_row(report: Report, snapshot: Snapshot) -> Row:
    lost = sum(
        1
        for history in snapshot.histories.values()
        for entry in history
        if (entry["event"].get("data") or {}).get("error_type") == "TaskLost"
    )
    return Row(
        "faults injected (info)",
        f"{report.figure('kills'):.0f} kills, {lost} tries lost, "
        f"{report.figure('resends'):.0f} ledger resends",
        "-",
        True,
    )


def _folder(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))


def kill_workers(size: str, fsync: str = "always", name: str = "kill-workers") -> Outcome:
    count, over, lasts, notes = {
        "full": (140, 55.0, 60.0, 8.0),
        "quick": (40, 30.0, 40.0, 8.0),
        "ci": (12, 8.0, 12.0, 3.0),
    }[size]
    folder, began = _folder(name), time.monotonic()
    with cluster(folder, Shape(fsync=fsync)) as c:
        run = Run(c, seed=1)
        batch = Batch("kw", count, over, work=0.3, undo_work=0.3, note_within=notes)
        run.drive([batch], Chaos(every=(1.5, 3.5), lasts=lasts))
        run.settle(settle_for(size))
        snapshot, report = run.collect()
    rows = [
        *common_rows(report, budget=size != "ci"),
        *published_rows(report),
        health_row(run),
        fault_row(report, snapshot),
    ]
    return Outcome(name, rows, report, time.monotonic() - began, folder)


def kill_workers_everysec(size: str) -> Outcome:
    return kill_workers(size, fsync="everysec", name="kill-workers-everysec")


def self_kill(size: str) -> Outcome:
    """CI size skips the timing: no run alone, the latency beside shown, not judged."""
    normal, killers, over = {"full": (70, 20, 40.0), "quick": (16, 6, 8.0), "ci": (6, 3, 4.0)}[size]
    timed = size != "ci"
    notes = 2.0  # seconds: the notes only add events here
    folder, began = _folder("self-kill"), time.monotonic()
    calm = Chaos(every=None, lasts=0.0)
    with cluster(folder, Shape()) as c:
        run = Run(c, seed=4)
        if timed:
            run.drive([Batch("alone", normal, over, fail_every=0, note_within=notes)], calm)
            run.settle(settle_for(size))
        run.drive(
            [
                Batch("beside", normal, over, fail_every=0, note_within=notes),
                Batch("selfkill", killers, over / 2, workflow="chaos_self_kill", notes=0),
            ],
            calm,
        )
        run.settle(settle_for(size))
        snapshot, report = run.collect()
    alone, beside = latency(snapshot, "alone-"), latency(snapshot, "beside-")
    tries = [
        len({c["attempt"] for c in snapshot.sink if c["i"] == i and c["step"] == "explode"})
        for i in snapshot.instances
        if i.startswith("selfkill-")
    ]
    ended = [
        i
        for i, f in snapshot.instances.items()
        if i.startswith("selfkill-")
        and f["status"] == "failed"
        and [
            e["event"]["data"].get("state")
            for e in snapshot.histories[i]
            if e["event"]["type"] == "compensation.completed" and e["outcome"] != "ignored"
        ]
        == ["prepare"]
    ]
    bound = 2 * alone + 1.0
    slowed = (
        Row(
            "others not slowed (p95 latency)",
            f"{beside:.2f}s beside vs {alone:.2f}s alone",
            f"<= {bound:.2f}s",
            0 < beside <= bound,
        )
        if timed
        else Row("others' p95 latency beside (info)", f"{beside:.2f}s", "-", True)
    )
    rows = [
        *common_rows(report, budget=timed),
        health_row(run),
        Row(
            "self-killing task: tries per instance",
            f"{min(tries, default=0)}..{max(tries, default=0)}",
            f"<= {SELF_KILL_TRIES}",
            bool(tries) and max(tries) <= SELF_KILL_TRIES,
        ),
        Row(
            "self-killing task: failed, compensated once",
            f"{len(ended)}/{len(tries)}",
            "all",
            len(ended) == len(tries) == killers,
        ),
        slowed,
        fault_row(report, snapshot),
    ]
    return Outcome("self-kill", rows, report, time.monotonic() - began, folder)


def compensation(size: str) -> Outcome:
    count, over, lasts = {
        "full": (140, 60.0, 65.0),
        "quick": (24, 20.0, 35.0),
        "ci": (24, 20.0, 35.0),
    }[size]
    folder, began = _folder("compensation"), time.monotonic()
    chaos = Chaos(
        every=(1.0, 2.5),
        kinds={"child": 0.6, "horse": 0.3, "worker": 0.05, "everything": 0.05},
        roles={"tasks": 3.0, "applier": 1.0, "notifications": 0.5},
        lasts=lasts,
    )
    with cluster(folder, Shape()) as c:
        run = Run(c, seed=5)
        run.drive([Batch("comp", count, over, fail_every=2, undo_work=0.4)], chaos)
        run.settle(settle_for(size))
        snapshot, report = run.collect()
    failing = [i for i, f in snapshot.instances.items() if f["status"] == "failed"]
    rows = [
        *common_rows(report, budget=size != "ci"),
        health_row(run),
        Row(
            "failing instances compensated",
            f"{report.figure('compensated_instances'):.0f}/{len(failing)}, "
            f"{report.figure('compensations_expected'):.0f} steps",
            f">= {count // 2} failing, all compensated",
            len(failing) >= count // 2 and report.figure("compensated_instances") == len(failing),
        ),
        fault_row(report, snapshot),
    ]
    return Outcome("compensation", rows, report, time.monotonic() - began, folder)


def latency(snapshot: Snapshot, prefix: str) -> float:
    """p95 of start-to-final seconds of the instances whose id starts with `prefix`."""
    seconds: list[float] = []
    for instance_id, history in snapshot.histories.items():
        if not instance_id.startswith(prefix):
            continue
        created = float(snapshot.instances[instance_id]["created_at"])
        ended = next((e for e in history if e["status"] in ("completed", "failed")), None)
        if ended is not None:
            seconds.append(float(ended["event"]["at"]) - created)
    if len(seconds) < 2:
        return seconds[0] if seconds else 0.0
    return statistics.quantiles(seconds, n=20)[-1]


SCENARIOS: dict[str, Callable[[str], Outcome]] = {
    "kill-workers": kill_workers,
    "kill-workers-everysec": kill_workers_everysec,
    "self-kill": self_kill,
    "compensation": compensation,
}
QUICK = ("kill-workers", "self-kill", "compensation")


def discard(outcome: Outcome, keep: bool) -> None:
    if outcome.passed and not keep:
        shutil.rmtree(outcome.folder, ignore_errors=True)
    else:
        say(f"  records kept in {outcome.folder}")

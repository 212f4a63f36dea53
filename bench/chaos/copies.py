"""Checks of the duplicates scenario: copies of events never applied, the end as without them.

Plain data in, like checker.py: the faulted run's Snapshot, the injector's
log (duplicator.py: one "seen" line per task.completed it found, one "copy"
line per copy it delivered) and the fault-free reference run's Snapshot.

  copy_applied         a copy moved its instance: an entry of its event id, after
                       the first, that is not `ignored`, or a history that does not
                       hold the original at all
  copy_unrecorded      a copy the history does not show: every copy delivered must
                       appear as an entry of its event id, after the first, `ignored`
  applied_after_final  an entry after the instance finished that is not `ignored`
                       (late events are recorded, never applied)
  reference_differs    an instance whose final state, status, context or path of
                       states differs from the reference run's instance with the
                       same business key (`ref` in its input)
  not_followed         a task.completed in a history the injector never considered
                       (the injector must have had its chance at every one)
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from bench.chaos.model import Report, Snapshot

FINISHED = ("completed", "failed", "cancelled")  # no kills here: a failed one is final
COPY_CHECKS = (
    "copy_applied",
    "copy_unrecorded",
    "applied_after_final",
    "reference_differs",
    "not_followed",
)


def flag(report: Report, check: str, message: str) -> None:
    report.violations.setdefault(check, []).append(message)


def ending(fields: dict[str, str], history: list[dict[str, Any]]) -> dict[str, Any]:
    """What must match the reference: state, status, context, and the states passed."""
    path: list[tuple[Any, Any]] = []
    for entry in history:
        step = (entry["to"], entry["status"])
        if entry["outcome"] != "ignored" and (not path or path[-1] != step):
            path.append(step)
    return {
        "state": fields.get("state"),
        "status": fields.get("status"),
        "context": json.loads(fields.get("context") or "{}"),
        "path": [f"{state}/{status}" for state, status in path],
    }


def by_business_key(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for instance_id, fields in snapshot.instances.items():
        ref = str(json.loads(fields.get("context") or "{}").get("ref", instance_id))
        out[ref] = ending(fields, snapshot.histories.get(instance_id, []))
    return out


def compare(report: Report, snapshot: Snapshot, reference: Snapshot) -> None:
    mine, theirs = by_business_key(snapshot), by_business_key(reference)
    report.figures["compared"] = len(set(mine) | set(theirs))
    report.figures["identical"] = 0
    for ref in sorted(set(mine) | set(theirs)):
        got, want = mine.get(ref), theirs.get(ref)
        if got is None or want is None:
            where = "the faulted run" if got is None else "the reference run"
            flag(report, "reference_differs", f"{ref}: missing from {where}")
            continue
        differing = sorted(k for k in want if got[k] != want[k])
        if differing:
            detail = "; ".join(f"{k}: {got[k]} vs {want[k]}" for k in differing)
            flag(report, "reference_differs", f"{ref}: {detail[:300]}")
        else:
            report.add("identical")


def check_copies(report: Report, snapshot: Snapshot, log: list[dict[str, Any]]) -> None:
    for name in COPY_CHECKS:
        report.violations.setdefault(name, [])
    for figure in ("copies", "copies_late", "copies_reordered", "copies_recorded"):
        report.figures[figure] = 0
    seen = {(str(e["instance"]), str(e["event_id"])) for e in log if e.get("kind") == "seen"}
    copies = [e for e in log if e.get("kind") == "copy"]
    delivered: Counter[tuple[str, str]] = Counter(
        (str(c["instance"]), str(c["event_id"])) for c in copies
    )
    late: Counter[tuple[str, str]] = Counter(
        (str(c["instance"]), str(c["event_id"])) for c in copies if c.get("late")
    )
    report.figures["copies"] = len(copies)
    report.figures["copies_late"] = sum(late.values())
    report.figures["copies_reordered"] = sum(
        1 for c in copies if int(c.get("history_then", 0)) > int(c.get("seen_after", 0))
    )
    deliveries = Counter(1 + delivered.get(key, 0) for key in seen)
    for times in (1, 2, 3):
        report.figures[f"delivered_{times}x"] = deliveries.get(times, 0)
    report.figures["late_recorded"] = 0
    of_instance: dict[str, dict[str, int]] = defaultdict(dict)
    for (owner, event_id), count in delivered.items():
        of_instance[owner][event_id] = count
    for instance_id, history in sorted(snapshot.histories.items()):
        entries: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in history:
            entries[str(entry["event"]["id"])].append(entry)
            key = (instance_id, str(entry["event"]["id"]))
            if entry["event"]["type"] == "task.completed" and key not in seen:
                flag(report, "not_followed", f"{instance_id}: {key[1]} never considered for copies")
        _after_final(report, instance_id, history)
        for event_id, count in sorted(of_instance.get(instance_id, {}).items()):
            found = entries.get(event_id, [])
            if not found:
                flag(report, "copy_applied", f"{instance_id}: {event_id} copied, never applied")
                continue
            extra = found[1:]
            moved = [e for e in extra if e["outcome"] != "ignored"]
            if moved:
                flag(
                    report,
                    "copy_applied",
                    f"{instance_id}: a copy of {event_id} applied at seq "
                    f"{[e['seq'] for e in moved]} ({moved[0]['outcome']})",
                )
            recorded = min(count, len(extra) - len(moved))
            report.add("copies_recorded", recorded)
            report.add("late_recorded", min(late.get((instance_id, event_id), 0), recorded))
            if recorded < count:
                flag(
                    report,
                    "copy_unrecorded",
                    f"{instance_id}: {count} copies of {event_id} delivered, "
                    f"{recorded} in the history (ignored)",
                )
    for owner in sorted(set(of_instance) - set(snapshot.histories)):
        flag(report, "copy_applied", f"{owner}: copies delivered to an instance not loaded")


def _after_final(report: Report, instance_id: str, history: list[dict[str, Any]]) -> None:
    ended = next((n for n, e in enumerate(history) if e["status"] in FINISHED), None)
    if ended is None:
        return
    for entry in history[ended + 1 :]:
        report.add("after_final")
        if entry["outcome"] != "ignored":
            flag(
                report,
                "applied_after_final",
                f"{instance_id}: {entry['event']['type']} {entry['event']['id']} applied at "
                f"seq {entry['seq']} ({entry['outcome']}) after the instance finished",
            )

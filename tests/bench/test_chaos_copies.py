"""The duplicates scenario's checks prove themselves, and its injector delivers true copies.

The checks (bench/chaos/copies.py) read plain data: the synthetic run of
tests/bench/test_chaos_checker.py, with an injector log written by hand; each test
plants one fault. The injector (bench/chaos/duplicator.py) runs against a
real Redis, on an instance moved by the real applier.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.chaos.checker import Snapshot, check
from bench.chaos.copies import check_copies, compare
from bench.chaos.duplicator import Duplicator
from bench.chaos.journal import read_lines
from bench.chaos.model import Report
from orchestrator.core.events import Event
from orchestrator.entry.bootstrap import bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.runtime.dispatch import job_id
from tests.bench.test_chaos_checker import REGISTRY, clean_snapshot


def completed(snapshot: Snapshot) -> list[tuple[str, str]]:
    return [
        (instance_id, str(entry["event"]["id"]))
        for instance_id, history in sorted(snapshot.histories.items())
        for entry in history
        if entry["event"]["type"] == "task.completed"
    ]


def seen_log(snapshot: Snapshot) -> list[dict[str, Any]]:
    """The injector considered every task.completed and copied none."""
    return [
        {"kind": "seen", "instance": i, "event_id": e, "copies": 0} for i, e in completed(snapshot)
    ]


def record_copy(snapshot: Snapshot, instance_id: str, event_id: str, outcome: str) -> None:
    """A copy of the event as the history would show it, at the end: recorded, `outcome`."""
    history = snapshot.histories[instance_id]
    original = next(e for e in history if e["event"]["id"] == event_id)
    last = history[-1]
    entry = {
        **copy.deepcopy(original),
        "seq": last["seq"] + 1,
        "outcome": outcome,
        "from": last["to"],
        "to": last["to"],
        "status": last["status"],
        "note": "duplicate" if outcome == "ignored" else "",
        "effects": [],
    }
    history.append(entry)
    snapshot.instances[instance_id]["seq"] = str(entry["seq"])


def copy_line(instance_id: str, event_id: str, late: bool) -> dict[str, Any]:
    return {
        "kind": "copy",
        "instance": instance_id,
        "event_id": event_id,
        "type": "task.completed",
        "seen_after": 2,
        "history_then": 5,
        "late": late,
    }


def copies_report(snapshot: Snapshot, log: list[dict[str, Any]]) -> Report:
    report = check(snapshot, REGISTRY.get)
    check_copies(report, snapshot, log)
    return report


@pytest.fixture
def clean() -> Snapshot:
    return clean_snapshot()


def test_a_copy_recorded_and_ignored_after_the_end_passes(clean: Snapshot) -> None:
    # Given the shipped order's first answer delivered again after the order finished,
    # and recorded in its history as ignored
    answers = completed(clean)
    instance_id, event_id = answers[-1]
    log = [*seen_log(clean), copy_line(instance_id, event_id, late=True)]
    record_copy(clean, instance_id, event_id, "ignored")
    # When checked
    report = copies_report(clean, log)
    # Then nothing is flagged, and the copy counts as recorded, late
    assert report.flagged == set(), report.violations
    figures = report.figures
    assert (figures["copies"], figures["copies_recorded"]) == (1, 1)
    assert (figures["copies_late"], figures["late_recorded"], figures["copies_reordered"]) == (
        1,
        1,
        1,
    )
    assert (figures["delivered_2x"], figures["delivered_1x"]) == (1, len(answers) - 1)


def test_a_copy_the_history_does_not_show_is_unrecorded(clean: Snapshot) -> None:
    instance_id, event_id = completed(clean)[0]
    log = [*seen_log(clean), copy_line(instance_id, event_id, late=False)]
    report = copies_report(clean, log)
    assert report.flagged == {"copy_unrecorded"}
    assert report.figures["copies_recorded"] == 0


def test_a_copy_that_moved_the_instance_is_applied_twice(clean: Snapshot) -> None:
    instance_id, event_id = completed(clean)[0]
    log = [*seen_log(clean), copy_line(instance_id, event_id, late=True)]
    record_copy(clean, instance_id, event_id, "transition")
    flagged = copies_report(clean, log).flagged
    assert {"copy_applied", "duplicate_event", "applied_after_final"} <= flagged


def test_an_event_the_injector_never_considered_is_flagged(clean: Snapshot) -> None:
    log = seen_log(clean)[1:]
    assert copies_report(clean, log).flagged == {"not_followed"}


def test_an_entry_applied_after_the_instance_finished_is_flagged(clean: Snapshot) -> None:
    # Given a note applied (not ignored) after the shipped order reached done
    history = clean.histories["ok-1"]
    late = copy.deepcopy(next(e for e in history if e["event"]["type"] == "chaos.note"))
    late["event"]["id"] = "note-late"
    late.update(seq=history[-1]["seq"] + 1, status="completed", outcome="transition")
    history.append(late)
    clean.instances["ok-1"]["seq"] = str(late["seq"])
    report = Report()
    check_copies(report, clean, seen_log(clean))
    assert report.flagged == {"applied_after_final"}
    # and the same entry ignored is what a late event must look like
    late["outcome"] = "ignored"
    report = Report()
    check_copies(report, clean, seen_log(clean))
    assert report.flagged == set()


def test_instances_are_compared_with_the_reference_by_business_key(clean: Snapshot) -> None:
    # Given a reference run of the same orders under other instance ids
    reference = clean_snapshot()
    reference.instances = {f"ref-{i}": f for i, f in reference.instances.items()}
    reference.histories = {f"ref-{i}": h for i, h in reference.histories.items()}
    report = Report()
    compare(report, clean, reference)
    assert report.flagged == set(), report.violations
    assert report.figures["identical"] == report.figures["compared"] == 2
    # When one ends with another context
    context = json.loads(clean.instances["ok-1"]["context"])
    context["tracking"] = "T-other"
    clean.instances["ok-1"]["context"] = json.dumps(context)
    report = Report()
    compare(report, clean, reference)
    # Then that one differs, by its ref
    assert report.flagged == {"reference_differs"}
    assert report.violations["reference_differs"][0].startswith("ok-1: context")
    assert report.figures["identical"] == 1


def test_a_different_path_to_the_same_end_differs(clean: Snapshot) -> None:
    reference = clean_snapshot()
    entry = next(e for e in clean.histories["ok-1"] if e["to"] == "charge")
    entry["to"] = "pack"  # as if it had skipped the charge
    report = Report()
    compare(report, clean, reference)
    assert any("path" in v for v in report.violations["reference_differs"])


# -- the injector, against a real Redis ----------------------------------------------------


def test_the_injector_delivers_byte_identical_copies_and_logs_them(
    redis_url: str, tmp_path: Path
) -> None:
    # Given an order whose first task answer the applier has applied
    app = bootstrap(
        Settings(redis_url=redis_url, workflows=("bench.chaos.workload",), data_dir=tmp_path)
    )
    app.client.start("chaos_order", {"ref": "o-1", "email": "a@example.com"}, instance_id="o-1")
    applier = app.applier()
    applier.drain()
    entered = app.client.store.history("o-1")[-1]
    job = job_id("o-1", entered["seq"], 0)
    data = {"state": "reserve", "attempt": 1, "entered_seq": entered["seq"], "job": job}
    answer = Event(f"{job}-task.completed", "task.completed", "o-1", time.time(), data)
    inbox = app.keys.inbox(app.keys.partition_of("o-1"))
    app.redis.xadd(inbox, {"e": answer.to_json()})
    applier.drain()
    assert app.client.store.get("o-1").state == "charge"
    before = app.client.store.history("o-1")
    # When the injector runs a moment, with short waits, and is stopped
    log = tmp_path / "copies.jsonl"
    copies = 0
    for seed in range(20):  # a seed that copies the answer at least once
        injector = Duplicator(app.redis, app.keys, log, seed, waits=((0, 0.05), (0.05, 0.1)))
        thread = threading.Thread(target=injector.run)
        thread.start()
        time.sleep(0.5)
        injector.stop()
        thread.join(10)
        assert not thread.is_alive()
        copies = sum(1 for line in read_lines(log) if line["kind"] == "copy")
        if copies:
            break
        log.unlink()
    # Then the inbox got that many copies of the answer, byte for byte as it came
    lines = read_lines(log)
    seen = [line for line in lines if line["kind"] == "seen"]
    assert [(s["instance"], s["event_id"], s["copies"]) for s in seen] == [
        ("o-1", answer.id, copies)
    ]
    entries: Any = app.redis.xrange(inbox)
    raw = [fields[b"e"].decode() for _, fields in entries]
    assert raw[-copies:] == [answer.to_json()] * copies
    assert {line["entry"] for line in lines if line["kind"] == "copy"} == {
        entry_id.decode() for entry_id, _ in entries[-copies:]
    }
    assert all(not line["late"] for line in lines if line["kind"] == "copy")
    # and once applied, the instance has not moved
    applier.drain()
    assert app.client.store.get("o-1").state == "charge"
    after = app.client.store.history("o-1")
    assert [e for e in after if e["outcome"] != "ignored"] == before

"""The offline invariant checker: plain data in, violations and figures out.

It reads what was recorded, never the live system, so it can be fed synthetic
data (tests/bench/test_chaos_checker.py plants one fault of each kind and expects
each to be flagged). A `Snapshot` holds, per instance, the stored instance
hash and its history (Store.history); the client's journal of acknowledged
calls; the ledger records (Ledger.of_instance); what the providers received;
the task sink; the harness's fault log; and what work is still owed to each
instance (jobs, timers, outstanding entries, inbox events).

The invariants, by name (a Report maps each to its violations):

  final                  every instance reaches a final state
  sequence               seq numbers run 1..n with no gap or repeat, n = the instance's seq
  duplicate_event        no event id applied twice to an instance (a later entry of the
                         same id may only record it, `ignored`)
  double_decision        no task try decided twice (two answers of one job that both moved it)
  replay                 the transition function replays the history to the stored instance
                         (an illegal move shows as a divergence)
  lost_ack               every journaled start/emit is in its instance's history
  compensation           a failed instance undid each completed compensable step exactly
                         once, newest first (history and sink agree); none undone otherwise
  double_refund          no step compensated by two compensation runs (two state entries)
  unrefunded             judged at the sink (`chaos:done`, the calls that returned), not from
                         the history: in every instance that compensated (its history shows
                         `compensating`, or it ended failed or cancelled with a compensable
                         step done), each compensable step whose task completed at the sink,
                         even after its state was left (a charge that returned after its
                         payment timeout fired), was undone by exactly one compensation run
                         that completed there, newest first by completion
  rerun_after_success    a task try ran again only after that try failed or was lost
  attempts               no step tried more often than its configured attempts
  unanswered_call        every task call at the sink got an answer in the history
  lost_notification      every notify effect has a ledger record that ended sent, and the
                         provider received it
  unexplained_duplicate  a message the provider received twice was preceded, between the
                         two acceptances, by a recorded kill of a notification worker
  phantom_notification   every message a provider received was asked for by a notify effect
  orphan                 no non-final instance is left with no job, timer, outstanding
                         entry or inbox event that could move it
  dead_letter            no event was dead-lettered
  published_missing      (outbox.py; when the snapshot has the published streams) every
                         start and transition has its `orchestrator.workflow.started` or
                         `.transitioned` event (instance, from, to, event), every state
                         entry each business event its state names, every `publish` the
                         history lists its event
  published_duplicate    no published event id twice, no step's event twice
  published_orphan       no published event without its step in the history
  published_order        each instance's events in its history's order
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from bench.chaos.effects import check_notifications, check_sink
from bench.chaos.model import ANSWERS, UNDECIDED, Definitions, Report, Snapshot, is_final
from bench.chaos.outbox import check_published
from orchestrator.core.definition import Definition
from orchestrator.core.instance import Instance
from orchestrator.core.machine import PASSED
from orchestrator.core.replay import replay

__all__ = ["Report", "Snapshot", "check", "completed_steps", "is_final"]


def check(snapshot: Snapshot, definitions: Definitions) -> Report:
    report = Report()
    for figure in (
        "instances",
        "final",
        "acknowledged",
        "lost_acknowledged",
        "compensating_instances",
        "not_undone",
        "undone_twice",
    ):
        report.figures[figure] = 0
    calls, returned = _by_instance(snapshot.sink), _by_instance(snapshot.completions)
    for instance_id, fields in sorted(snapshot.instances.items()):
        history = [e for e in snapshot.histories.get(instance_id, []) if e["outcome"] != PASSED]
        report.add("instances")
        if is_final(fields):
            report.add("final")
        else:
            owed = "; ".join(snapshot.pending.get(instance_id, [])) or "nothing"
            report.flag(
                "final",
                f"{instance_id}: {fields.get('status')} in state {fields.get('state')}, "
                f"try {fields.get('attempt')}; owed: {owed}",
            )
            if not snapshot.pending.get(instance_id):
                report.flag("orphan", f"{instance_id}: not final and nothing owed to it")
        _sequence(report, instance_id, fields, history)
        _duplicates(report, instance_id, history)
        try:
            definition = definitions(fields["workflow"], int(fields["version"]))
        except Exception as exc:
            report.flag("replay", f"{instance_id}: no definition ({exc})")
            continue
        _replay(report, definition, fields, history)
        _compensation(report, definition, instance_id, fields, history, calls[instance_id])
        _unrefunded(report, definition, instance_id, fields, history, returned[instance_id])
    _journal(report, snapshot)
    check_sink(report, snapshot, definitions)
    check_notifications(report, snapshot)
    check_published(report, snapshot, definitions)
    for letter in snapshot.dead_letters:
        report.flag("dead_letter", f"{letter.get('reason')}: {str(letter.get('event'))[:120]}")
    report.figures["kills"] = sum(1 for f in snapshot.faults if f.get("action") != "restart")
    report.figures["duplicate_transitions"] = sum(
        len(report.violations[c]) for c in ("duplicate_event", "double_decision")
    ) + report.figures.get("repeated_seqs", 0)
    return report


def _sequence(
    report: Report, instance_id: str, fields: dict[str, str], history: list[dict[str, Any]]
) -> None:
    seqs = [int(entry["seq"]) for entry in history]
    repeats = sorted(s for s, n in Counter(seqs).items() if n > 1)
    missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
    report.add("repeated_seqs", len(repeats))
    if repeats or missing or seqs != sorted(seqs):
        report.flag(
            "sequence", f"{instance_id}: missing seq {missing}, repeated {repeats}, order {seqs}"
        )
    if int(fields.get("seq", 0)) != len(history):
        report.flag(
            "sequence",
            f"{instance_id}: the instance is at seq {fields.get('seq')}, "
            f"its history has {len(history)} entries",
        )


def _duplicates(report: Report, instance_id: str, history: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    again: Counter[str] = Counter()  # entries of an id after its first that did something
    for entry in history:
        event_id = str(entry["event"]["id"])
        if event_id in seen and entry["outcome"] != "ignored":
            again[event_id] += 1
        seen.add(event_id)
    for event_id, count in sorted(again.items()):
        report.flag("duplicate_event", f"{instance_id}: event {event_id} applied {count + 1} times")
    decided: Counter[str] = Counter()
    for entry in history:
        event = entry["event"]
        job = (event.get("data") or {}).get("job")
        if event["type"] in ANSWERS and job and entry["outcome"] not in UNDECIDED:
            decided[str(job)] += 1
    for job, count in sorted(decided.items()):
        if count > 1:
            report.flag("double_decision", f"{instance_id}: try {job} decided {count} times")


def _replay(
    report: Report, definition: Definition, fields: dict[str, str], history: list[dict[str, Any]]
) -> None:
    try:
        result = replay(definition, Instance.from_fields(fields), history)
    except Exception as exc:  # a history the transition function cannot even read
        report.flag("replay", f"{fields.get('id')}: replay raised {type(exc).__name__}: {exc}")
        return
    if not result.matches:
        report.add("replay_mismatches")
        report.flag(
            "replay",
            f"{fields.get('id')}: first divergence {result.first_divergence}, "
            f"fields differing {sorted(result.differences)}",
        )


def _journal(report: Report, snapshot: Snapshot) -> None:
    for entry in snapshot.journal:
        report.add("acknowledged")
        history = snapshot.histories.get(str(entry["instance"]), [])
        found = sum(1 for h in history if h["event"]["id"] == entry["event_id"])
        if found == 0:
            report.add("lost_acknowledged")
            report.flag(
                "lost_ack",
                f"{entry['instance']}: acknowledged {entry['type']} {entry['event_id']} "
                "is not in the history",
            )


def _by_instance(lines: list[dict[str, Any]]) -> defaultdict[str, list[dict[str, Any]]]:
    out: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        out[str(line["i"])].append(line)
    return out


def completed_steps(definition: Definition, history: list[dict[str, Any]]) -> list[str]:
    """Compensable steps whose task completed (and so pushed their undo), in completion order.

    Each is named by the task's own state, `event.data["state"]`, not by the entry's
    `from`: a late completion (an answer after its state was left, which pushes its undo)
    is recorded with `from` = the state the instance was in when it arrived."""
    compensable = {n for n, s in definition.states.items() if s.compensation is not None}
    steps: list[str] = []
    for entry in history:
        event = entry["event"]
        if event["type"] != "task.completed" or entry["outcome"] in UNDECIDED:
            continue
        state = (event.get("data") or {}).get("state") or entry["from"]
        if state in compensable:
            steps.append(str(state))
    return steps


def _compensation(
    report: Report,
    definition: Definition,
    instance_id: str,
    fields: dict[str, str],
    history: list[dict[str, Any]],
    sink: list[dict[str, Any]],
) -> None:
    done = completed_steps(definition, history)
    undone = [
        str((e["event"].get("data") or {}).get("state"))
        for e in history
        if e["event"]["type"] == "compensation.completed" and e["outcome"] not in UNDECIDED
    ]
    compensated = any(e["status"] == "compensating" for e in history)
    gave_up = fields.get("status") in ("failed", "cancelled") and is_final(fields)
    expected = list(reversed(done)) if compensated or (gave_up and done) else []
    calls: dict[str, float] = {}
    for call in sink:  # this instance's calls
        if call["kind"] == "compensation":
            calls[call["step"]] = min(calls.get(call["step"], call["at"]), call["at"])
    at_sink = sorted(calls, key=lambda step: calls[step])
    if expected:
        report.add("compensated_instances")
        report.add("compensations_expected", len(expected))
    if undone != expected:
        report.flag(
            "compensation",
            f"{instance_id}: completed {done}, undone {undone} (expected {expected})",
        )
    if at_sink != expected:
        report.flag(
            "compensation",
            f"{instance_id}: the sink saw compensations {at_sink} (expected {expected})",
        )


def _unrefunded(
    report: Report,
    definition: Definition,
    instance_id: str,
    fields: dict[str, str],
    history: list[dict[str, Any]],
    returned: list[dict[str, Any]],
) -> None:
    """Every step whose task completed at the sink undone once there, when the instance
    compensated. Runs of a compensation are told apart by their state entry
    (`entered_seq`): the retries of one run share it (an idempotent refund is keyed on it),
    two runs are two refunds. An instance not final is the `final` check's to report."""
    compensable = {n for n, s in definition.states.items() if s.compensation is not None}
    done_at: dict[str, float] = {}  # step -> its task's first completion at the sink
    runs: defaultdict[str, dict[int, float]] = defaultdict(dict)  # step -> entry -> first
    for line in returned:
        step, at = str(line["step"]), float(line["at"])
        if step not in compensable:
            continue
        if line["kind"] == "compensation":
            entry = int(line["entered_seq"])
            runs[step][entry] = min(runs[step].get(entry, at), at)
        else:
            done_at[step] = min(done_at.get(step, at), at)
    gave_up = fields.get("status") in ("failed", "cancelled")
    compensated = any(e["status"] == "compensating" for e in history) or (
        gave_up and bool(done_at or completed_steps(definition, history))
    )
    if not compensated or not is_final(fields):
        return
    report.add("compensating_instances")
    for step in sorted(done_at, key=lambda s: done_at[s]):
        count = len(runs.get(step, {}))
        if count == 1:
            continue
        report.add("not_undone" if count == 0 else "undone_twice")
        report.add(f"{'not_undone' if count == 0 else 'undone_twice'}:{step}")
        report.flag(
            "unrefunded",
            f"{instance_id}: {step} completed at the sink at {done_at[step]:.3f}, "
            f"undone by {count} compensation runs (expected 1); the instance ended "
            f"{fields.get('status')}",
        )
    for step in sorted(set(runs) - set(done_at)):
        report.flag(
            "unrefunded",
            f"{instance_id}: {step} undone by {len(runs[step])} compensation runs, "
            "its task never completed at the sink",
        )
    newest_first = sorted(done_at, key=lambda s: done_at[s], reverse=True)
    undone = sorted((s for s in runs if s in done_at), key=lambda s: min(runs[s].values()))
    if undone != [s for s in newest_first if s in runs]:
        report.flag(
            "unrefunded",
            f"{instance_id}: undone at the sink in the order {undone}, "
            f"expected newest first {newest_first}",
        )

"""Checks of the effects outside the engine: task calls at the sink, messages at the providers.

Tasks run at least once, so a step may be called more than once; what must
hold is that each repeat follows a try the history shows failed or lost,
that no step runs more tries than configured, and that a compensation is
paid once per compensation run. Retries of one run share the run's state
entry (`entered_seq`), the identity an idempotent refund is keyed on; two
entries for the same step mean the engine undid the step twice: a double
refund whatever the task does.

A notification's identity is its ledger key, `INSTANCE-SEQ-INDEX:TO` (the
notify effect's place in the history, and the recipient); the collector maps
each provider receipt to it (the email's Message-ID is derived from it; the
SMS body names the instance).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from typing import Any

from bench.chaos.model import ANSWERS, FAILURES, SENT, Definitions, Report, Snapshot
from orchestrator.core.definition import LOST_TRIES

NOTIFY = re.compile(r"^notify (\S+) to (.*) with (\S+)$")  # orchestrator.core.effects.describe
REDIS_LEAD = 5.0  # seconds a send may take (the workers' TWILIO_TIMEOUT): one under way
# when Redis crashed can be accepted that long after the crash


def notify_keys(instance_id: str, history: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(ledger key, channel, recipient) of every notify effect in a history."""
    found: list[tuple[str, str, str]] = []
    for entry in history:
        for index, effect in enumerate(entry.get("effects") or []):
            if m := NOTIFY.match(str(effect)):
                found.append((f"{instance_id}-{entry['seq']}-{index}:{m[2]}", m[1], m[2]))
    return found


def answers_by_job(history: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for entry in history:
        event = entry["event"]
        job = (event.get("data") or {}).get("job")
        if event["type"] in ANSWERS and job:
            out[str(job)].append(str(event["type"]))
    return out


def check_sink(report: Report, snapshot: Snapshot, definitions: Definitions) -> None:
    for figure in ("task_calls", "repeated_calls", "double_refunds"):
        report.figures.setdefault(figure, 0)
    calls_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in snapshot.sink:
        calls_of[str(call["i"])].append(call)
    for instance_id, calls in sorted(calls_of.items()):
        answers = answers_by_job(snapshot.histories.get(instance_id, []))
        fields = snapshot.instances.get(instance_id) or {}
        try:
            definition = definitions(fields["workflow"], int(fields["version"]))
        except Exception:
            definition = None
        report.add("task_calls", len(calls))
        for job, count in sorted(Counter(str(c["job"]) for c in calls).items()):
            if count > 1:
                report.flag("rerun_after_success", f"{instance_id}: try {job} ran {count} times")
        for call in calls:
            if str(call["job"]) not in answers:
                report.flag(
                    "unanswered_call",
                    f"{instance_id}: {call['kind']} {call['step']} try {call['attempt']} "
                    f"({call['job']}) has no answer in the history",
                )
        runs: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
        for call in calls:
            runs[(str(call["step"]), str(call["kind"]), int(call["entered_seq"]))].append(call)
        for (step, kind, _), run in sorted(runs.items()):
            report.add("repeated_calls", len(run) - 1)
            tries = sorted({int(c["attempt"]) for c in run})
            limit = _attempts(definition, step, kind)
            if limit is not None and (len(tries) > limit or tries[-1] > limit):
                report.flag(
                    "attempts", f"{instance_id}: {kind} {step} tried {tries}, limit {limit}"
                )
            for call in run:
                if int(call["attempt"]) < tries[-1]:
                    seen = answers.get(str(call["job"]), [])
                    if not FAILURES.intersection(seen):
                        report.flag(
                            "rerun_after_success",
                            f"{instance_id}: {kind} {step} ran try {tries[-1]} after try "
                            f"{call['attempt']} ({call['job']}), answered {seen or 'never'}",
                        )
        undo_runs = Counter(step for step, kind, _ in runs if kind == "compensation")
        for step, count in sorted(undo_runs.items()):
            if count > 1:
                report.add("double_refunds", count - 1)
                report.flag(
                    "double_refund", f"{instance_id}: {step} compensated by {count} separate runs"
                )


def _attempts(definition: Any, step: str, kind: str) -> int | None:
    """The most tries a step may get: its own, and the lost ones retried apart from them."""
    state = definition.states.get(step) if definition is not None else None
    spec = None if state is None else state.compensation if kind == "compensation" else state.task
    return None if spec is None else int(spec.attempts) + LOST_TRIES


def check_notifications(report: Report, snapshot: Snapshot) -> None:
    for figure in (
        "notifications",
        "lost_notifications",
        "duplicate_notifications",
        "explained_duplicates",
        "resends",
    ):
        report.figures.setdefault(figure, 0)
    received: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for receipt in snapshot.provider:
        received[str(receipt.get("key"))].append(receipt)
    kills = [f for f in snapshot.faults if "notifications" in (f.get("roles") or [])]
    expected: set[str] = set()
    for instance_id, history in sorted(snapshot.histories.items()):
        records = {r.get("key"): r for r in snapshot.ledger.get(instance_id, [])}
        for key, channel, _ in notify_keys(instance_id, history):
            expected.add(key)
            report.add("notifications")
            record = records.get(key)
            got = sorted(received.get(key, []), key=lambda r: float(r["at"]))
            resends = int((record or {}).get("resends", 0) or 0)
            report.add("resends", resends)
            status = (record or {}).get("status")
            if status not in SENT or not got:
                report.add("lost_notifications")
                report.flag(
                    "lost_notification",
                    f"{key} ({channel}): ledger {status or 'has no record'}, "
                    f"provider received {len(got)}",
                )
            extra = len(got) - 1
            if extra <= 0:
                continue
            report.add("duplicate_notifications", extra)
            why = _unexplained(got, kills)
            if resends < extra:
                why = why or f"the ledger counts {resends} resends"
            if why:
                report.flag("unexplained_duplicate", f"{key} ({channel}): {why}")
            else:
                report.add("explained_duplicates", extra)
    for key, got in sorted(received.items()):
        if key not in expected:
            report.flag(
                "phantom_notification",
                f"{len(got)} {got[0].get('channel')} message(s) no notify effect asked for "
                f"(key {key}, ref {got[0].get('ref')})",
            )
    total = report.figure("notifications")
    report.figures["duplicate_percent"] = (
        100.0 * report.figure("duplicate_notifications") / total if total else 0.0
    )


def _unexplained(got: list[dict[str, Any]], kills: list[dict[str, Any]]) -> str | None:
    """Each further copy needs a kill of a notification worker between it and the copy
    before: the provider accepted, the worker died before the ledger said sent, and the
    claim expired so the job ran again (the README's at-least-once window). A Redis crash
    explains a copy accepted up to REDIS_LEAD seconds after it too: the send was under way
    when Redis went, the provider took it, the ledger could not be told."""
    for before, after in itertools.pairwise(got):
        slack = max(float(before["resolution"]), float(after["resolution"])) + 0.1
        low, high = float(before["at"]) - slack, float(after["at"]) + slack
        if not any(
            low - (REDIS_LEAD if "redis" in (k.get("roles") or []) else 0.0)
            <= float(k["at"])
            <= high
            for k in kills
        ):
            return (
                f"copies accepted at {before['at']:.3f} and {after['at']:.3f} with no kill of "
                "a notification worker in between"
            )
    return None

"""The checker's data: a Snapshot of everything recorded, and a Report of what broke.

Plain lists and dicts, so a test can build one by hand; `collect.load` builds
one from a finished run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.definition import Definition

CHECKS = (
    "final",
    "sequence",
    "duplicate_event",
    "double_decision",
    "replay",
    "lost_ack",
    "compensation",
    "double_refund",
    "unrefunded",
    "rerun_after_success",
    "attempts",
    "unanswered_call",
    "lost_notification",
    "unexplained_duplicate",
    "phantom_notification",
    "orphan",
    "dead_letter",
    "published_missing",
    "published_duplicate",
    "published_orphan",
    "published_order",
)
ANSWERS = frozenset(
    {"task.completed", "task.failed", "compensation.completed", "compensation.failed"}
)
FAILURES = frozenset({"task.failed", "compensation.failed"})
UNDECIDED = frozenset({"ignored", "retry"})  # outcomes that leave a try open or change nothing
SENT = frozenset({"sent", "delivered", "undelivered"})

Definitions = Callable[[str, int], Definition]


@dataclass
class Snapshot:
    instances: dict[str, dict[str, str]]  # id -> stored instance fields (Instance.to_fields)
    histories: dict[str, list[dict[str, Any]]]  # id -> Store.history entries
    journal: list[dict[str, Any]] = field(default_factory=list)  # acknowledged calls
    ledger: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # id -> records
    provider: list[dict[str, Any]] = field(default_factory=list)  # receipts, each with "key"
    sink: list[dict[str, Any]] = field(default_factory=list)  # one per task call
    completions: list[dict[str, Any]] = field(default_factory=list)  # one per call that returned
    faults: list[dict[str, Any]] = field(default_factory=list)  # the harness's kills
    pending: dict[str, list[str]] = field(default_factory=dict)  # id -> work owed to it
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    # every published event, in each partition's stream order (outbox.entry); None: not
    # collected, the published_* checks are skipped
    published: list[dict[str, Any]] | None = None


@dataclass
class Report:
    violations: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CHECKS})
    figures: dict[str, float] = field(default_factory=dict)

    def flag(self, check: str, message: str) -> None:
        self.violations[check].append(message)

    def add(self, figure: str, amount: float = 1) -> None:
        self.figures[figure] = self.figures.get(figure, 0) + amount

    def figure(self, name: str) -> float:
        return self.figures.get(name, 0)

    @property
    def flagged(self) -> set[str]:
        return {name for name, found in self.violations.items() if found}

    @property
    def ok(self) -> bool:
        return not self.flagged


def is_final(fields: dict[str, str]) -> bool:
    """Instance.finished, on the stored hash: a failed compensation is resumable, not final."""
    status = fields.get("status", "")
    return status in ("completed", "cancelled") or (
        status == "failed" and not fields.get("compensating_to")
    )

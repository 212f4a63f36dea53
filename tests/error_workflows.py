"""Workflows for tests/runtime/test_task_errors.py: errors that say whether to retry, routed by
type, and tasks that ask who they are. Their tasks count calls and record what
`task_info()` told them in files named by the context."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from orchestrator import NonRetryable, On, State, Task, Workflow, task_info


class PaymentDeclined(NonRetryable):
    """Never retried: a NonRetryable."""


class CardExpired(PaymentDeclined):
    """A subclass, routed by its base's name."""


class FraudSuspected(Exception):
    """A plain error the charging task names in its `non_retryable`."""


def _count(ctx: dict[str, Any]) -> int:
    counter = Path(ctx["counter"])
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    return calls


def charge(ctx: dict[str, Any]) -> dict[str, Any]:
    """Fails as `outcome` says: declined, expired, fraud, or flaky (the first
    `fail_times` calls raise ConnectionError, a retryable error)."""
    calls = _count(ctx)
    outcome = ctx.get("outcome", "ok")
    if outcome == "declined":
        raise PaymentDeclined("card declined")
    if outcome == "expired":
        raise CardExpired("card expired")
    if outcome == "fraud":
        raise FraudSuspected("looks like fraud")
    if outcome == "flaky" and calls <= int(ctx.get("fail_times", 0)):
        raise ConnectionError(f"call {calls} failed")
    return {"charged_on_call": calls}


class Payment(Workflow):
    """A charge that is retried on a network error, never on a refusal."""

    name = "errors_payment"
    charging = State(
        initial=True,
        task=Task(charge, retries=3, backoff=0.01, non_retryable=("FraudSuspected",)),
    )
    paid = State(final=True)
    declined = State(final=True, outcome="failed")
    fraud = State(final=True, outcome="failed")
    failed = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=charging, target=paid),
        On("task.failed", source=charging, target=declined, error="PaymentDeclined"),
        On("task.failed", source=charging, target=fraud, error=FraudSuspected),
        On("task.failed", source=charging, target=failed),
    ]


def identify(ctx: dict[str, Any]) -> None:
    """Appends what task_info() says to the file `infos`; fails its first `fail_times`
    tries in state `flaky_state`, and for good (NonRetryable) in `failing_state`."""
    info = task_info()
    with open(ctx["infos"], "a") as handle:
        handle.write(json.dumps(dataclasses.asdict(info)) + "\n")
    if info.state == ctx.get("flaky_state") and info.attempt <= int(ctx.get("fail_times", 0)):
        raise ConnectionError(f"try {info.attempt} failed")
    if info.state == ctx.get("failing_state") and info.kind == "task":
        raise NonRetryable("gives up")


class Identified(Workflow):
    """Two steps that record who they are; the first is undone if the second fails."""

    name = "errors_identified"
    version = 2
    first = State(
        initial=True,
        task=Task(identify, retries=3, backoff=0.01, non_retryable=[PaymentDeclined]),
        compensation=Task(identify, retries=2, backoff=0.01),
    )
    second = State(task=identify)
    done = State(final=True)
    undone = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=first, target=second),
        On("task.completed", source=second, target=done),
        On("task.failed", source=second, target=undone, compensate=True),
    ]

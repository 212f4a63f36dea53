"""Workflows for tests/core/test_machine_stateful.py that exercise the saga rules of #12.

Their tasks are never run (the state machine plays RQ and answers for them);
they exist so that the definitions name importable functions.
"""

from __future__ import annotations

from typing import Any

from orchestrator import ANY, On, State, Task, Workflow


class Declined(Exception):
    """Never retried by `quoting` (non_retryable), and routed by `error=`."""


class LedgerError(Exception):
    pass


class Refused(LedgerError):
    """A LedgerError: `holding` routes every LedgerError; `settling` never retries it."""


def quote(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"quote": ctx.get("amount")}


def unquote(ctx: dict[str, Any]) -> None:
    return None


def hold(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"held": True}


def release(ctx: dict[str, Any]) -> None:
    return None


def settle(ctx: dict[str, Any]) -> None:
    return None


def log_note(ctx: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """A `save` function: appends the event's `ref` to the context's `notes`."""
    return {"notes": [*ctx.get("notes", []), data.get("ref")]}


class Ledger(Workflow):
    """Quote, hold, settle; every #12 rule in one table.

    - `skip` leaves `quoting` while its try may still run: a completion of it
      arriving later is late, and must be undone if the ledger is voided;
    - `quoting` never retries a `Declined`, which `error=` routes to `declined`;
      any other failure of it, once its tries are spent, no row handles: the
      instance fails, halted, until `workflow.retry`;
    - `holding` routes every LedgerError (Refused is one) and a try lost once
      too often (TaskLost) to `voided`, compensating; others halt it;
    - `settling` names no compensation; Refused is never retried there;
    - rows save the event's data: all of it (`offer`), under a key (`memo`,
      `void`), or as a function returns it (`note`, `skip`).
    """

    name = "ledger"
    waiting = State(initial=True)
    quoting = State(
        task=Task(quote, retries=2, backoff=0.5, non_retryable=(Declined,)),
        compensation=Task(unquote, retries=1, non_retryable="Refused"),
    )
    holding = State(
        task=Task(hold),
        compensation=Task(release, retries=2),
        timeout=30,
        timeout_event="hold.expired",
    )
    settling = State(task=Task(settle, non_retryable=(Refused,)))
    settled = State(final=True)
    declined = State(final=True, outcome="failed")
    voided = State(final=True, outcome="cancelled")
    transitions = [
        On("offer", source=waiting, target=quoting, save=True),
        On("memo", source=quoting, target=quoting, internal=True, save="memo"),
        On("skip", source=quoting, target=holding, save=log_note),
        On("task.completed", source=quoting, target=holding),
        On("task.failed", source=quoting, target=declined, error=Declined, compensate=True),
        On("note", source=holding, target=holding, internal=True, save=log_note),
        On("task.completed", source=holding, target=settling),
        On(
            "task.failed",
            source=holding,
            target=voided,
            error=[LedgerError, "TaskLost"],
            compensate=True,
        ),
        On("hold.expired", source=holding, target=voided, compensate=True),
        On("task.completed", source=settling, target=settled),
        On("task.failed", source=settling, target=declined, error="Refused", compensate=True),
        On("void", source=ANY, target=voided, compensate=True, save="void"),
    ]

"""Workflows for tests/core/test_machine_stateful.py that exercise the saga rules of #12,
and parallel states and maps (#15).

Their tasks are never run (the state machine plays RQ and answers for them);
they exist so that the definitions name importable functions.
"""

from __future__ import annotations

from typing import Any

from orchestrator import ANY, Branch, Map, On, State, Task, Workflow


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


def charge(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"charged": True}


def refund(ctx: dict[str, Any]) -> None:
    return None


def reserve(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"reserved": True}


def label(ctx: dict[str, Any]) -> str:
    return "label-1"


def ship(ctx: dict[str, Any]) -> None:
    return None


def unship(ctx: dict[str, Any]) -> None:
    return None


def double(ctx: dict[str, Any]) -> int:
    return int(ctx["item"]) * 2


def undo_double(ctx: dict[str, Any]) -> None:
    return None


class Checkout(Workflow):
    """Three branches at once, failing fast; a plain state after them, undone with them.

    - `charge` is tried three times, never again after a `Declined`, and refunded;
    - `reserve` is tried once, and released;
    - `label` is tried twice and names no compensation: never undone, never waited for;
    - the state's failure takes the row of its first failed branch's error type: a
      `Declined` one is declined, a `LedgerError` one voided (both compensating); any other
      (RuntimeError, Fatal, TaskLost) no row handles: the instance fails, halted, and
      `workflow.retry` runs again only the branches that did not complete;
    - `prepare.expired` and `void` compensate while branches still run.
    """

    name = "stateful_checkout"
    preparing = State(
        initial=True,
        parallel={
            "charge": Branch(
                Task(charge, retries=2, backoff=0.5, non_retryable=(Declined,)),
                compensation=Task(refund, retries=1),
            ),
            "reserve": Branch(reserve, compensation=Task(release, retries=1)),
            "label": Branch(Task(label, retries=1)),
        },
        timeout=30,
        timeout_event="prepare.expired",
    )
    shipping = State(task=Task(ship, retries=1), compensation=unship)
    shipped = State(final=True)
    declined = State(final=True, outcome="failed")
    voided = State(final=True, outcome="cancelled")
    transitions = [
        On("task.completed", source=preparing, target=shipping),
        On("task.failed", source=preparing, target=declined, error=Declined, compensate=True),
        On("task.failed", source=preparing, target=voided, error=LedgerError, compensate=True),
        On("prepare.expired", source=preparing, target=voided, compensate=True),
        On("task.completed", source=shipping, target=shipped),
        On("task.failed", source=shipping, target=voided, compensate=True),
        On("void", source=ANY, target=voided, compensate=True),
    ]


class Batch(Workflow):
    """A map over the items `go` brings, two at once, waiting for all before it fails.

    Each item is tried once (a try lost with its worker aside) and undone if the batch is;
    one item failed for good is tolerated, a second fails the state once no item runs: if
    the first to fail was `Declined`, the batch fails, compensating; any other error no row
    handles, so the instance fails, halted, and `workflow.retry` runs again only the items
    that did not complete. `abort` compensates at any time.
    """

    name = "stateful_batch"
    waiting = State(initial=True)
    doubling = State(
        map=Map(
            Task(double, non_retryable=(Declined,)),
            items="items",
            results="doubled",
            compensation=Task(undo_double, retries=1),
            max_concurrency=2,
            tolerated_failures=1,
        ),
        on_failure="wait_all",
    )
    done = State(final=True)
    failed = State(final=True, outcome="failed")
    transitions = [
        On("go", source=waiting, target=doubling, save=True),
        On("task.completed", source=doubling, target=done),
        On("task.failed", source=doubling, target=failed, error=Declined, compensate=True),
        On("abort", source=ANY, target=failed, compensate=True),
    ]


class Sweep(Workflow):
    """A map that tolerates no failure and fails fast: a `Declined` item declines the sweep
    (compensating); any other failure no row handles, so the instance fails, halted, and
    `workflow.retry` runs again only the items that did not complete, in order, two at once.
    """

    name = "stateful_sweep"
    waiting = State(initial=True)
    sweeping = State(
        map=Map(
            Task(double, retries=1, backoff=0.5, non_retryable=(Declined,)),
            items="items",
            compensation=undo_double,
            max_concurrency=2,
        ),
    )
    done = State(final=True)
    declined = State(final=True, outcome="failed")
    transitions = [
        On("go", source=waiting, target=sweeping, save=True),
        On("task.completed", source=sweeping, target=done),
        On("task.failed", source=sweeping, target=declined, error=Declined, compensate=True),
        On("abort", source=ANY, target=declined, compensate=True),
    ]

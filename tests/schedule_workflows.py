"""Workflows that declare schedules, loaded only by the tests of schedules (a schedule
declared in the shared test workflows would start instances in every other test)."""

from __future__ import annotations

from typing import Any

from orchestrator import On, Schedule, State, Workflow


def report(context: dict[str, Any]) -> dict[str, Any]:
    return {"reported": context.get("scheduled_at")}


class Heartbeat(Workflow):
    """Starts every second on its own; one task, then done."""

    name = "heartbeat"
    schedules = [Schedule(every=1, input={"source": "declared"}, catch_up="skip")]
    reporting = State(initial=True, task=report)
    done = State(final=True)
    transitions = [On("task.completed", source=reporting, target=done)]


class Waiter(Workflow):
    """Stays running until told `go`: what overlap is about."""

    name = "waiter"
    waiting = State(initial=True)
    done = State(final=True)
    transitions = [On("go", source=waiting, target=done)]


class Keyed(Workflow):
    """Correlated by account: a tick while the account's instance runs starts nothing."""

    name = "keyed"
    correlate_by = "account"
    waiting = State(initial=True)
    done = State(final=True)
    transitions = [On("go", source=waiting, target=done)]

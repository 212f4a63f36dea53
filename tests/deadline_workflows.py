"""Workflows with deadlines, absolute timeouts and ignored events (issue #15), for the
pure tests and the end-to-end one."""

from __future__ import annotations

from typing import Any

from orchestrator import ANY, On, State, Workflow


def hold(context: dict[str, Any]) -> dict[str, Any]:
    return {"held": True}


def release(context: dict[str, Any]) -> dict[str, Any]:
    return {"released": True}


class Booking(Workflow):
    """Holds a seat, waits for payment; the whole booking may take 8 s. Past that, the
    seat is released (compensate) and the booking ends expired. Reminders are ignored
    once paid."""

    name = "booking"
    deadline = 8
    holding = State(initial=True, task=hold, compensation=release)
    awaiting_payment = State()
    paid = State(ignore=["payment.reminder"])
    confirmed = State(final=True)
    expired = State(final=True, outcome="failed")
    transitions = [
        On("task.completed", source=holding, target=awaiting_payment),
        On("payment.received", source=awaiting_payment, target=paid),
        On("confirm", source=paid, target=confirmed),
        On("workflow.deadline", source=ANY, target=expired, compensate=True),
    ]


class Unrouted(Workflow):
    """A deadline no row handles: the instance fails for good."""

    name = "unrouted"
    deadline = "1s"
    waiting = State(initial=True)
    done = State(final=True)
    transitions = [On("go", source=waiting, target=done)]


class Appointment(Workflow):
    """Waits until the moment in the context's `starts_at`, then reminds."""

    name = "appointment"
    waiting = State(initial=True, timeout_at="starts_at", timeout_event="appointment.due")
    reminded = State(final=True)
    cancelled_early = State(final=True, outcome="cancelled")
    transitions = [
        On("appointment.due", source=waiting, target=reminded),
        On("call.off", source=waiting, target=cancelled_early),
    ]


class Parcel(Workflow):
    """Tracks a parcel by its number; a scan for a parcel not yet registered starts
    its tracking (signal-with-start)."""

    name = "parcel"
    correlate_by = "parcel"
    missing_instance = "start"
    tracking = State(initial=True)
    delivered = State(final=True)
    transitions = [On("parcel.delivered", source=tracking, target=delivered, save=True)]


class Payment(Workflow):
    """Started by an order; a bank's confirmation may arrive before the order does and
    waits up to 2 s for it."""

    name = "payment"
    correlate_by = "payment_id"
    missing_instance = "wait"
    missing_instance_wait = 2
    awaiting = State(initial=True)
    settled = State(final=True)
    transitions = [On("bank.confirmed", source=awaiting, target=settled, save=True)]

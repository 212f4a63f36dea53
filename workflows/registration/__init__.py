"""User registration: verify the email address, remind once, create the profile or expire."""

from __future__ import annotations

from typing import ClassVar

from orchestrator import Notify, On, Publish, State, Task, Workflow
from workflows.registration import tasks
from workflows.registration.events import UserExpired, UserVerified


class Registration(Workflow):
    """Send a verification email, remind once, then create the profile or expire the account.

    Started by `user.registered` (input: user_id, email, name); `email.verified`
    finds the instance by `user_id`. Each wait lasts `VERIFY_SECONDS`, then
    `REMINDER_SECONDS`: class constants, so a test can fire the timers early
    by passing a time beyond them to `Timers.fire_due`. The emails are the
    folders of `templates/` (verify_email has a French variant, fr/).
    """

    name = "registration"
    version = 1
    starts_on = ["user.registered"]
    correlate_by = "user_id"
    publishes = [
        Publish("user.verified", UserVerified, data=["user_id"]),
        Publish("user.expired", UserExpired, data=["user_id"]),
    ]

    VERIFY_SECONDS: ClassVar[float] = 24 * 3600.0
    REMINDER_SECONDS: ClassVar[float] = 24 * 3600.0

    awaiting_verification = State(
        initial=True,
        notify=[Notify("email", "verify_email", to="email")],
        timeout=VERIFY_SECONDS,
        timeout_event="verification.overdue",
    )
    reminded = State(
        notify=[Notify("email", "verification_reminder", to="email")],
        timeout=REMINDER_SECONDS,
        timeout_event="verification.overdue",
    )
    creating_profile = State(task=Task(tasks.create_profile, retries=2, timeout=30, backoff=0.05))
    expiring = State(task=Task(tasks.expire_account, retries=2, timeout=30, backoff=0.05))
    active = State(final=True, notify=[Notify("email", "welcome", to="email")])
    expired = State(
        final=True,
        outcome="failed",
        notify=[Notify("email", "registration_expired", to="email")],
        publish=["user.expired"],
    )
    failed = State(final=True, outcome="failed")

    transitions = [
        On(
            "email.verified",
            source=[awaiting_verification, reminded],
            target=creating_profile,
            publish=["user.verified"],
        ),
        On("verification.overdue", source=awaiting_verification, target=reminded),
        On("verification.overdue", source=reminded, target=expiring),
        On("task.completed", source=creating_profile, target=active),
        On("task.completed", source=expiring, target=expired),
        On("task.failed", source=[creating_profile, expiring], target=failed),
    ]

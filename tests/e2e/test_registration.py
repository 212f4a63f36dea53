"""The bundled registration workflow, every path, against the real Redis.

Tasks and notifications run in-process with `run_burst`; the day-long waits
are cut short by firing the timers with a clock moved past them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.core.errors import UnknownInstance
from orchestrator.core.instance import Instance
from orchestrator.entry.bootstrap import App
from orchestrator.entry.client import Emitted
from orchestrator.entry.worker import run_burst
from workflows.registration import Registration
from workflows.registration.tasks import valid_name

# History describes a notify effect as "notify CHANNEL to TO with TEMPLATE"
VERIFY = "notify email to {email} with verify_email"
REMINDER = "notify email to {email} with verification_reminder"
WELCOME = "notify email to {email} with welcome"
EXPIRED = "notify email to {email} with registration_expired"
FIRST_DEADLINE = Registration.VERIFY_SECONDS
SECOND_DEADLINE = Registration.VERIFY_SECONDS + Registration.REMINDER_SECONDS


def register(app: App, user_id: str, name: str = "Ann Lee", **extra: Any) -> Emitted:
    data = {
        "user_id": user_id,
        "email": f"{user_id.lower()}@example.com",
        "name": name,
        "work_seconds": 0,
        **extra,
    }
    emitted = app.client.emit("user.registered", data)
    assert emitted.started
    run_burst(app)
    return emitted


def verify(app: App, user_id: str) -> None:
    emitted = app.client.emit("email.verified", {"link": "clicked"}, key=("user_id", user_id))
    assert not emitted.started
    run_burst(app)


def fire_timers(app: App, after: float) -> int:
    """Fire every timer due within `after` seconds from now, then run what follows."""
    partitions = list(range(app.keys.partitions))
    fired = app.applier().timers.fire_due(partitions, time.time() + after)
    if fired:
        run_burst(app)
    return fired


def armed_timers(app: App) -> int:
    return sum(int(app.redis.zcard(app.keys.timers(p))) for p in range(app.keys.partitions))


def effects(app: App, instance_id: str) -> list[str]:
    return [effect for h in app.client.history(instance_id) for effect in h["effects"]]


def count(found: list[str], prefix: str) -> int:
    return sum(1 for effect in found if effect.startswith(prefix))


def states(app: App, instance_id: str) -> list[str]:
    """The states the instance went through, in order, without repeats."""
    path: list[str] = []
    for h in app.client.history(instance_id):
        if h["to"] and (not path or path[-1] != h["to"]):
            path.append(h["to"])
    return path


def where(instance: Instance) -> tuple[str | None, str]:
    return instance.state, instance.status


def test_verified_in_time_creates_the_profile_and_welcomes(app: App) -> None:
    # Given a user who registered and was sent the verification email
    iid = register(app, "U1").instance_id
    waiting = app.client.status(iid)
    assert where(waiting) == ("awaiting_verification", "running")
    assert count(effects(app, iid), VERIFY.format(email="u1@example.com")) == 1
    assert armed_timers(app) == 1
    # When the address is verified before the deadline
    verify(app, "U1")
    # Then the profile is created, the welcome sent, the deadline disarmed
    done = app.client.status(iid)
    assert where(done) == ("active", "completed")
    assert done.context["profile_id"] == "P-U1"
    assert done.context["display_name"] == "Ann Lee"
    sent = effects(app, iid)
    assert count(sent, WELCOME.format(email="u1@example.com")) == 1
    assert count(sent, REMINDER.format(email="u1@example.com")) == 0
    assert states(app, iid) == ["awaiting_verification", "creating_profile", "active"]
    assert armed_timers(app) == 0
    assert fire_timers(app, SECOND_DEADLINE + 60) == 0


def test_verified_after_the_reminder_becomes_active(app: App) -> None:
    # Given a user who let the first deadline pass
    iid = register(app, "U2").instance_id
    assert fire_timers(app, FIRST_DEADLINE + 1) == 1
    reminded = app.client.status(iid)
    assert where(reminded) == ("reminded", "running")
    assert count(effects(app, iid), REMINDER.format(email="u2@example.com")) == 1
    # When the address is verified after the reminder
    verify(app, "U2")
    # Then the account becomes active, with one reminder sent and no expiry
    done = app.client.status(iid)
    assert where(done) == ("active", "completed")
    assert done.context["profile_id"] == "P-U2"
    sent = effects(app, iid)
    assert count(sent, REMINDER.format(email="u2@example.com")) == 1
    assert count(sent, WELCOME.format(email="u2@example.com")) == 1
    assert count(sent, EXPIRED.format(email="u2@example.com")) == 0
    assert states(app, iid) == [
        "awaiting_verification",
        "reminded",
        "creating_profile",
        "active",
    ]
    assert armed_timers(app) == 0


def test_never_verified_is_reminded_once_then_expired(app: App) -> None:
    # Given a user who never verifies
    iid = register(app, "U3").instance_id
    # Nothing happens before the first deadline
    assert fire_timers(app, FIRST_DEADLINE - 60) == 0
    assert app.client.status(iid).state == "awaiting_verification"
    # When both deadlines pass
    assert fire_timers(app, FIRST_DEADLINE + 1) == 1
    assert app.client.status(iid).state == "reminded"
    assert fire_timers(app, SECOND_DEADLINE + 1) == 1
    # Then one reminder was sent, the account was expired, and the user told
    done = app.client.status(iid)
    assert where(done) == ("expired", "failed")
    assert done.context["expired_account"] == "U3"
    assert done.context["released_email"] == "u3@example.com"
    assert "profile_id" not in done.context
    sent = effects(app, iid)
    assert count(sent, REMINDER.format(email="u3@example.com")) == 1
    assert count(sent, EXPIRED.format(email="u3@example.com")) == 1
    assert count(sent, WELCOME.format(email="u3@example.com")) == 0
    assert states(app, iid) == ["awaiting_verification", "reminded", "expiring", "expired"]
    assert armed_timers(app) == 0
    # And a verification arriving too late finds no instance answering to the user id
    with pytest.raises(UnknownInstance):
        app.client.emit("email.verified", key=("user_id", "U3"))


def test_profile_task_failing_ends_failed(app: App) -> None:
    # Given a user whose name no profile can hold
    iid = register(app, "U4", name="R2-D2").instance_id
    # When the address is verified, the profile task fails on every try
    verify(app, "U4")
    # Then the instance ends failed without a welcome and without compensating
    done = app.client.status(iid)
    assert where(done) == ("failed", "failed")
    assert "profile_id" not in done.context
    history = app.client.history(iid)
    assert [h["outcome"] for h in history if h["event"]["type"] == "task.failed"] == [
        "retry",
        "retry",
        "transition",
    ]
    last_failure = [h for h in history if h["event"]["type"] == "task.failed"][-1]
    assert last_failure["event"]["data"]["error_type"] == "InvalidProfile"
    assert "compensating" not in [h["outcome"] for h in history]
    assert count(effects(app, iid), WELCOME.format(email="u4@example.com")) == 0
    assert states(app, iid) == ["awaiting_verification", "creating_profile", "failed"]


def test_expiry_task_failing_ends_failed(app: App) -> None:
    # Given an account on legal hold that is never verified
    iid = register(app, "U5", legal_hold=True).instance_id
    # When both deadlines pass, the expiry task fails on every try
    fire_timers(app, FIRST_DEADLINE + 1)
    fire_timers(app, SECOND_DEADLINE + 1)
    # Then the instance ends failed, not expired, and the user is not told it expired
    done = app.client.status(iid)
    assert where(done) == ("failed", "failed")
    assert "expired_account" not in done.context
    assert count(effects(app, iid), EXPIRED.format(email="u5@example.com")) == 0
    assert states(app, iid) == ["awaiting_verification", "reminded", "expiring", "failed"]


def test_profile_names() -> None:
    assert valid_name("Ann Lee")
    assert valid_name("Zoë O'Brien-Smith Jr.")
    assert not valid_name("R2-D2")
    assert not valid_name(" - ")
    assert not valid_name("")


@pytest.fixture(autouse=True)
def every_history_replays_to_the_stored_state(app: App) -> Iterator[None]:
    """After each path, rebuilding every instance from its history gives the stored one."""
    yield
    for instance in app.client.list(limit=1000):
        report = app.client.replay(instance.id)
        assert report.matches, report.summary()

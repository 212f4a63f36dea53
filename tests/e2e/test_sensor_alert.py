"""The bundled sensor alert workflow, every path, against the real Redis.

Readings are emitted as `sensor.reading` with no address: the client starts
an alert (if the reading is over its threshold) or routes the reading to the
alert open for that sensor. Notifications run in-process with `run_burst`;
the acknowledgement timeout is cut short by firing the timer early.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.core.instance import Instance
from orchestrator.entry.bootstrap import App
from orchestrator.entry.client import Emitted
from orchestrator.entry.worker import run_burst
from workflows.sensor_alert import SensorAlert
from workflows.sensor_alert.tasks import BadReading, back_to_normal, over_threshold

THRESHOLD = 80.0
CONTACTS = {
    "oncall_phone": "+14155550101",
    "escalation_push": "device-bob",
    "escalation_email": "bob@example.com",
}
# History describes a notify effect as "notify CHANNEL to TO with TEMPLATE"
PAGE = "notify sms to +14155550101 with alert_page"
PUSH = "notify push to device-bob with alert_escalated"
EMAIL = "notify email to bob@example.com with alert_escalated"
RESOLVED = "notify sms to +14155550101 with alert_resolved"


def reading(app: App, value: float, sensor: str = "T-1", **extra: Any) -> Emitted:
    """What the sensor gateway sends: the value, the threshold and the on-call contacts."""
    data = {"sensor_id": sensor, "value": value, "threshold": THRESHOLD, **CONTACTS, **extra}
    emitted = app.client.emit("sensor.reading", data)
    run_burst(app)
    return emitted


def open_alert(app: App, sensor: str = "T-1") -> str:
    emitted = reading(app, 95.0, sensor)
    assert emitted.started
    assert where(app.client.status(emitted.instance_id)) == ("paging", "running")
    return emitted.instance_id


def acknowledge(app: App, sensor: str = "T-1") -> None:
    app.client.emit("alert.acknowledged", {"by": "ann"}, key=("sensor_id", sensor))
    run_burst(app)


def fire_timers(app: App, after: float) -> int:
    partitions = list(range(app.keys.partitions))
    fired = app.applier().timers.fire_due(partitions, time.time() + after)
    if fired:
        run_burst(app)
    return fired


def effects(app: App, instance_id: str) -> list[str]:
    return [effect for h in app.client.history(instance_id) for effect in h["effects"]]


def count(found: list[str], prefix: str) -> int:
    return sum(1 for effect in found if effect.startswith(prefix))


def states(app: App, instance_id: str) -> list[str]:
    path: list[str] = []
    for h in app.client.history(instance_id):
        if h["to"] and (not path or path[-1] != h["to"]):
            path.append(h["to"])
    return path


def parked_readings(instance: Instance) -> list[float]:
    return [float(e.data["value"]) for e in instance.parked if e.type == "sensor.reading"]


def where(instance: Instance) -> tuple[str | None, str]:
    return instance.state, instance.status


def test_reading_over_threshold_opens_one_alert_and_pages_by_sms(app: App) -> None:
    # Given a reading over the threshold, with no alert open
    iid = open_alert(app)
    # Then the on-call person is paged by SMS, once, and the ack timer is armed
    alert = app.client.status(iid)
    assert alert.context["threshold"] == THRESHOLD
    assert count(effects(app, iid), PAGE) == 1
    assert len(alert.timers) == 1
    # When another reading over the threshold arrives while the alert is open
    again = reading(app, 97.0)
    # Then it reaches the same alert: no second instance, no second SMS
    assert (again.started, again.instance_id) == (False, iid)
    assert [i.id for i in app.client.list(workflow="sensor_alert")] == [iid]
    alert = app.client.status(iid)
    assert where(alert) == ("paging", "running")
    assert parked_readings(alert) == []
    assert app.client.history(iid)[-1]["note"] == "internal"
    assert count(effects(app, iid), PAGE) == 1
    assert len(alert.timers) == 1


def test_reading_back_to_normal_resolves_the_alert(app: App) -> None:
    iid = open_alert(app)
    # When the next reading is at the threshold (not over it)
    back = reading(app, THRESHOLD)
    # Then the alert is resolved, the on-call person told, the ack timer cancelled
    assert (back.started, back.instance_id) == (False, iid)
    done = app.client.status(iid)
    assert where(done) == ("resolved", "completed")
    assert (done.parked, done.timers) == ((), ())
    sent = effects(app, iid)
    assert count(sent, RESOLVED) == 1
    assert count(sent, PUSH) == count(sent, EMAIL) == 0
    assert states(app, iid) == ["paging", "resolved"]
    assert fire_timers(app, SensorAlert.ACK_SECONDS + 60) == 0


def test_unacknowledged_alert_escalates_by_push_and_email_then_resolves(app: App) -> None:
    iid = open_alert(app)
    # Nothing escalates before the acknowledgement deadline
    assert fire_timers(app, SensorAlert.ACK_SECONDS - 30) == 0
    # When nobody acknowledges in time
    assert fire_timers(app, SensorAlert.ACK_SECONDS + 1) == 1
    # Then the next person is alerted by push and by email
    escalated = app.client.status(iid)
    assert where(escalated) == ("escalated", "running")
    sent = effects(app, iid)
    assert count(sent, PUSH) == 1
    assert count(sent, EMAIL) == 1
    assert count(sent, PAGE) == 1
    # And a reading still over the threshold changes nothing and re-sends nothing
    reading(app, 99.0)
    assert where(app.client.status(iid)) == ("escalated", "running")
    assert count(effects(app, iid), PUSH) == 1
    # When the readings come back to normal, the alert resolves from escalated
    reading(app, 70.0)
    done = app.client.status(iid)
    assert where(done) == ("resolved", "completed")
    assert done.parked == ()
    assert states(app, iid) == ["paging", "escalated", "resolved"]


def test_alert_acknowledged_after_escalation_then_resolved(app: App) -> None:
    iid = open_alert(app)
    fire_timers(app, SensorAlert.ACK_SECONDS + 1)
    assert app.client.status(iid).state == "escalated"
    # When the next person acknowledges
    acknowledge(app)
    assert where(app.client.status(iid)) == ("acknowledged", "running")
    # Then a good reading resolves it
    reading(app, 10.0)
    assert where(app.client.status(iid)) == ("resolved", "completed")
    assert states(app, iid) == ["paging", "escalated", "acknowledged", "resolved"]
    assert count(effects(app, iid), RESOLVED) == 1


def test_acknowledged_alert_keeps_taking_bad_readings_until_resolved(app: App) -> None:
    iid = open_alert(app)
    # Given an over-threshold reading taken while paging, without leaving the state
    reading(app, 96.0)
    assert parked_readings(app.client.status(iid)) == []
    # When the on-call person acknowledges
    acknowledge(app)
    # Then the alert is acknowledged and the ack timer cancelled
    alert = app.client.status(iid)
    assert where(alert) == ("acknowledged", "running")
    assert alert.timers == ()
    assert parked_readings(alert) == []
    assert fire_timers(app, SensorAlert.ACK_SECONDS + 60) == 0
    # And further bad readings and a repeated acknowledgement keep it acknowledged,
    # applied (not parked), without notifying anyone
    before = len(effects(app, iid))
    reading(app, 98.0)
    acknowledge(app)
    alert = app.client.status(iid)
    assert where(alert) == ("acknowledged", "running")
    assert parked_readings(alert) == []
    last_two = app.client.history(iid)[-2:]
    assert [(h["event"]["type"], h["outcome"]) for h in last_two] == [
        ("sensor.reading", "transition"),
        ("alert.acknowledged", "transition"),
    ]
    assert len(effects(app, iid)) == before
    assert count(effects(app, iid), PUSH) == 0
    # When the readings come back to normal, the alert resolves
    reading(app, 79.5)
    assert where(app.client.status(iid)) == ("resolved", "completed")
    assert states(app, iid) == ["paging", "acknowledged", "resolved"]


def test_reading_under_threshold_with_no_alert_open_starts_nothing(app: App) -> None:
    emitted = reading(app, 42.0)
    assert (emitted.started, emitted.instance_id) == (False, "")
    assert "nothing started" in emitted.note
    assert app.client.list(workflow="sensor_alert") == []


def test_after_resolution_a_new_bad_reading_opens_a_new_alert(app: App) -> None:
    first = open_alert(app)
    reading(app, 50.0)
    assert app.client.status(first).state == "resolved"
    # When the sensor goes over the threshold again
    second = open_alert(app)
    # Then a new alert is opened and pages again; the first stays resolved
    assert second != first
    assert {i.id for i in app.client.list(workflow="sensor_alert")} == {first, second}
    assert app.client.status(first).state == "resolved"
    assert count(effects(app, second), PAGE) == 1


def test_alerts_of_different_sensors_are_separate(app: App) -> None:
    hot = open_alert(app, "T-1")
    cold = open_alert(app, "T-2")
    assert hot != cold
    reading(app, 20.0, "T-2")
    assert app.client.status(cold).state == "resolved"
    assert app.client.status(hot).state == "paging"


def test_reading_without_a_numeric_value_is_refused(app: App) -> None:
    with pytest.raises(BadReading, match="numeric 'value'"):
        app.client.emit("sensor.reading", {"sensor_id": "T-9", "value": "hot", "threshold": 5})
    assert app.client.list(workflow="sensor_alert") == []


def test_threshold_comparisons() -> None:
    assert over_threshold({"value": 80.5, "threshold": 80})
    assert not over_threshold({"value": 80, "threshold": "80"})
    assert back_to_normal({"threshold": 80}, {"value": 80})
    assert not back_to_normal({"threshold": 80}, {"value": "81"})
    with pytest.raises(BadReading):
        over_threshold({"value": 1})
    with pytest.raises(BadReading):
        back_to_normal({"threshold": 80}, {"value": True})


def test_malformed_reading_for_an_open_alert_goes_to_the_dead_letters(app: App) -> None:
    iid = open_alert(app)
    # The client routes by sensor id without judging the reading; the guard refuses it
    emitted = app.client.emit("sensor.reading", {"sensor_id": "T-1", "value": None})
    assert emitted.instance_id == iid
    run_burst(app)
    assert where(app.client.status(iid)) == ("paging", "running")
    letters: Any = app.redis.xrange(app.keys.deadletters)
    assert len(letters) == 1
    reason = letters[0][1][b"reason"].decode()
    assert "numeric 'value'" in reason


@pytest.fixture(autouse=True)
def every_history_replays_to_the_stored_state(app: App) -> Iterator[None]:
    """After each path, rebuilding every instance from its history gives the stored one."""
    yield
    for instance in app.client.list(limit=1000):
        report = app.client.replay(instance.id)
        assert report.matches, report.summary()


def test_page_falls_back_from_sms_to_email_when_the_sms_fails(app: App) -> None:
    # Given an alert whose on-call person has no phone number, only an email address
    emitted = app.client.emit(
        "sensor.reading",
        {
            "sensor_id": "FB-1",
            "value": 95.0,
            "threshold": 80.0,
            "oncall_email": "oncall@example.com",
        },
    )
    # When the SMS page fails and the workflow hears of it
    run_burst(app)
    run_burst(app)
    # Then it pages by email instead
    alert = app.client.status(emitted.instance_id)
    assert alert.state == "paging_by_email"
    history = app.client.history(emitted.instance_id)
    failed = [h for h in history if h["event"]["type"] == "notification.failed"]
    assert failed[0]["event"]["data"]["channel"] == "sms"
    assert failed[0]["to"] == "paging_by_email"
    assert "notify email to oncall@example.com with alert_page" in failed[0]["effects"]
    # And an acknowledgement still works from there
    app.client.emit("alert.acknowledged", key=("sensor_id", "FB-1"))
    run_burst(app)
    assert app.client.status(emitted.instance_id).state == "acknowledged"

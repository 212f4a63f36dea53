"""IoT sensor alert: page the on-call person, escalate if unacknowledged, close when normal."""

from __future__ import annotations

from typing import ClassVar

from orchestrator import Notify, On, Publish, State, Workflow
from workflows.sensor_alert.events import AlertEscalated, AlertOpened, AlertResolved
from workflows.sensor_alert.tasks import (
    back_to_normal,
    over_threshold,
    sms_failed,
    still_alarming,
)

ACK_SECONDS = 5 * 60.0

# The templates (templates/NAME/ beside this module) say "within 5 minutes";
# tests/notifiers/test_templates.py holds their text to ACK_SECONDS.


class SensorAlert(Workflow):
    """Open an alert on an over-threshold reading; page by SMS, escalate, resolve when normal.

    A `sensor.reading` over its threshold with no alert open for that
    `sensor_id` starts an instance (`start_if`); one under it starts nothing.
    While an alert is open, the client routes every reading of that sensor
    to it (`correlate_by`), and a reading at or under the threshold the alert
    was opened with resolves it from any open state.

    Readings still over the threshold while the alert is open are consumed
    by internal transitions: the state is not left and entered again, so the
    SMS is not sent again and the acknowledgement timer keeps running.

    SMS-to-email fallback: when the page cannot be sent by SMS (no number,
    an invalid one, the provider refusing), `notification.failed` for the SMS
    moves the alert to `paging_by_email`, which pages the on-call person's
    `oncall_email` instead, with the same acknowledgement deadline.
    """

    name = "sensor_alert"
    version = 1
    starts_on = ["sensor.reading"]
    # A plain function, not staticmethod(...): the engine reads the class __dict__
    # either way, but mypy rejects a staticmethod against Workflow.start_if's type.
    start_if = over_threshold
    correlate_by = "sensor_id"
    publishes = [
        Publish("alert.opened", AlertOpened, data=["sensor_id", "value", "threshold"]),
        Publish("alert.escalated", AlertEscalated, data=["sensor_id"]),
        Publish("alert.resolved", AlertResolved, data=["sensor_id"]),
    ]

    ACK_SECONDS: ClassVar[float] = ACK_SECONDS

    paging = State(
        initial=True,
        publish=["alert.opened"],
        notify=[Notify("sms", "alert_page", to="oncall_phone")],
        timeout=ACK_SECONDS,
        timeout_event="alert.unacknowledged",
    )
    paging_by_email = State(
        notify=[Notify("email", "alert_page", to="oncall_email")],
        timeout=ACK_SECONDS,
        timeout_event="alert.unacknowledged",
    )
    escalated = State(
        publish=["alert.escalated"],
        notify=[
            Notify("push", "alert_escalated", to="escalation_push"),
            Notify("email", "alert_escalated", to="escalation_email"),
        ],
    )
    acknowledged = State()
    resolved = State(
        final=True,
        notify=[Notify("sms", "alert_resolved", to="oncall_phone")],
        publish=["alert.resolved"],
    )

    transitions = [
        On("notification.failed", source=paging, target=paging_by_email, guard=sms_failed),
        On(
            "sensor.reading",
            source=[paging, paging_by_email, escalated, acknowledged],
            target=resolved,
            guard=back_to_normal,
        ),
        *(
            On("sensor.reading", source=state, target=state, guard=still_alarming, internal=True)
            for state in (paging, paging_by_email, escalated, acknowledged)
        ),
        On("alert.unacknowledged", source=[paging, paging_by_email], target=escalated),
        On("alert.acknowledged", source=[paging, paging_by_email, escalated], target=acknowledged),
        On("alert.acknowledged", source=acknowledged, target=acknowledged, internal=True),
    ]

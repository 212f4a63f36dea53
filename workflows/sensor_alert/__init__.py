"""IoT sensor alert: page the on-call person, escalate if unacknowledged, close when normal."""

from __future__ import annotations

from typing import ClassVar

from orchestrator import Notify, On, State, Workflow
from workflows.sensor_alert.tasks import back_to_normal, over_threshold, still_alarming

ACK_SECONDS = 5 * 60.0

PAGE_SMS = (
    "Sensor {{ sensor_id }} alert | Reading {{ value }} is over the threshold {{ threshold }}. "
    f"Acknowledge within {ACK_SECONDS / 60:g} minutes or it escalates."
)
ESCALATION_PUSH = (
    "Escalated: sensor {{ sensor_id }} | Reading {{ value }} over {{ threshold }} was not "
    "acknowledged by {{ oncall_phone }}; you are next on call."
)
ESCALATION_EMAIL = (
    "Escalated alert: sensor {{ sensor_id }} over threshold | Sensor {{ sensor_id }} read "
    "{{ value }} (threshold {{ threshold }}) and the on-call person ({{ oncall_phone }}) did not "
    f"acknowledge within {ACK_SECONDS / 60:g} minutes. Please acknowledge the alert."
)
RESOLVED_SMS = (
    "Sensor {{ sensor_id }} resolved | Readings are back under the threshold {{ threshold }}."
)


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
    """

    name = "sensor_alert"
    version = 1
    starts_on = ["sensor.reading"]
    # A plain function, not staticmethod(...): the engine reads the class __dict__
    # either way, but mypy rejects a staticmethod against Workflow.start_if's type.
    start_if = over_threshold
    correlate_by = "sensor_id"

    ACK_SECONDS: ClassVar[float] = ACK_SECONDS

    paging = State(
        initial=True,
        notify=[Notify("sms", PAGE_SMS, to="oncall_phone")],
        timeout=ACK_SECONDS,
        timeout_event="alert.unacknowledged",
    )
    escalated = State(
        notify=[
            Notify("push", ESCALATION_PUSH, to="escalation_push"),
            Notify("email", ESCALATION_EMAIL, to="escalation_email"),
        ]
    )
    acknowledged = State()
    resolved = State(final=True, notify=[Notify("sms", RESOLVED_SMS, to="oncall_phone")])

    transitions = [
        On(
            "sensor.reading",
            source=[paging, escalated, acknowledged],
            target=resolved,
            guard=back_to_normal,
        ),
        *(
            On("sensor.reading", source=state, target=state, guard=still_alarming, internal=True)
            for state in (paging, escalated, acknowledged)
        ),
        On("alert.unacknowledged", source=paging, target=escalated),
        On("alert.acknowledged", source=[paging, escalated], target=acknowledged),
        On("alert.acknowledged", source=acknowledged, target=acknowledged, internal=True),
    ]

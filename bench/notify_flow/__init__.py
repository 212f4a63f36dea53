"""The notification benchmark's workflows: start, send one notification, finish.

`bench_email` and `bench_sms` each notify on entering their initial state and
finish when the notification's answer comes back (`notification.sent`, or
`notification.failed`), so every instance costs the engine one notify job
and two applied events, and nothing else: no task, no timer.
"""

from __future__ import annotations

from orchestrator import On, State, Workflow
from orchestrator.core.definition import Notify

EMAIL = "bench_email"
SMS = "bench_sms"


class BenchEmail(Workflow):
    name = EMAIL
    waiting = State(initial=True, notify=[Notify("email", "bench_note", to="to")])
    sent = State(final=True)
    failed = State(final=True, outcome="failed")
    transitions = [
        On("notification.sent", source=waiting, target=sent),
        On("notification.failed", source=waiting, target=failed),
    ]


class BenchSms(Workflow):
    name = SMS
    waiting = State(initial=True, notify=[Notify("sms", "bench_note", to="to")])
    sent = State(final=True)
    failed = State(final=True, outcome="failed")
    transitions = [
        On("notification.sent", source=waiting, target=sent),
        On("notification.failed", source=waiting, target=failed),
    ]

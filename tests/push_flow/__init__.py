"""A one-notification workflow for the Web Push end-to-end test (tests/notifiers/test_push.py).

It lives in a package of its own because templates are found beside the
module that defines the workflow (notifiers.templates.folder_of).
"""

from __future__ import annotations

from orchestrator import Notify, On, State, Workflow


class PushAlert(Workflow):
    name = "push_alert"
    version = 1

    alerting = State(initial=True, notify=[Notify("push", "alert", to="recipient")])
    notified = State(final=True)
    failed = State(final=True, outcome="failed")

    transitions = [
        On("notification.sent", source=alerting, target=notified),
        On("notification.failed", source=alerting, target=failed),
    ]

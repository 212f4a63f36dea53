"""The notification entry points RQ workers run: one notification (send_notification),
or several sent at the same time (send_notifications). Their payloads are
orchestrator.runtime.payloads' NotificationPayload and PackedNotifications; the channel
registry they send with is the process's (orchestrator.runtime.context)."""

from __future__ import annotations

import logging

from rq import get_current_job

from orchestrator.runtime import context, metrics
from orchestrator.runtime.heartbeat import Heartbeat
from orchestrator.runtime.payloads import NotificationPayload, PackedNotifications, alive_of

log = logging.getLogger("orchestrator.runtime.notify.jobs")


def send_notification(payload: NotificationPayload) -> None:
    """Deliver one notification (orchestrator.runtime.notify.delivery) and tell the
    workflow how it went."""
    from orchestrator.runtime.notify.batch import send_and_answer  # channels load only here

    process = context.current()
    job = get_current_job()
    assert job is not None, "orchestrator jobs run inside an RQ worker"
    with Heartbeat(job.connection, [alive_of(payload, job.id)]) as heartbeat:
        send_and_answer(job.connection, payload, job.id, heartbeat, process)
    metrics.job_done()  # a forked work-horse's counts, before it ends with the job


def send_notifications(payload: PackedNotifications) -> None:
    """Several notifications in one job, sent at the same time (orchestrator.runtime.notify.batch).
    An item that raised fails the job, after the others finished, so that the watchdog
    runs the rest again."""
    from orchestrator.runtime.notify.batch import send_batch

    process = context.current()
    job = get_current_job()
    assert job is not None, "orchestrator jobs run inside an RQ worker"
    items = payload["items"]
    alive = [alive_of(item, item["key"]) for item in items]
    with Heartbeat(job.connection, alive) as heartbeat:
        failures = send_batch(job.connection, items, heartbeat, process)
    metrics.job_done()  # a forked work-horse's counts, before it ends with the job
    for item, error in failures:
        log.error("notification %s failed in job %s: %r", item["key"], job.id, error)
    if failures:
        raise failures[0][1]  # RQ records the job failed: the watchdog runs the rest again

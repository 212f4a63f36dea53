"""Several notifications in one RQ job, sent at the same time; and a slow send
that does not hold its worker.

Why: a provider takes tens to hundreds of milliseconds to answer. One job per
notification, run one after another by a notification worker, sends ten a
second against a server that answers in 100 ms, whatever the machine. So the
dispatcher packs the notifications one commit makes ready into one job
(orchestrator.runtime.dispatch), and this runs its items on a pool of threads that
the worker process keeps, as are the channels' connections: the email channel
keeps an open SMTP connection per concurrent send, the SMS channel a pool of
kept-alive HTTP connections on the process's event loop, which the send threads hand
their requests to (notifiers.email, notifiers.sms, notifiers.loop).

Each item is exactly what a job of its own would be (`send_and_answer` is what
`orchestrator.runtime.notify.jobs.send_notification` runs), its key standing where a
job's id would: its own ledger claim, held by its own heartbeat key; then its
ledger outcome, its retry through Later, its watchdog entry answered, its
event and the end of its heartbeat, committed in one transaction as soon as
that item is done. A job that dies part way loses nothing that finished;
the others stop beating, and the watchdog runs them again. An item that
raised fails the job (after the others finished), so that the watchdog
sees it.

A slow send does not hold the worker (issue #11, orchestrator.runtime.notify.handover):
a webhook receiver that never answers kept each try on the worker for its whole
timeout, and every other notification queued behind it. So a job waits for its sends
only while they are quick (HOLD) or while the worker has nothing else to do. Once another job waits
in the queue, the sends still in flight are handed over to the process, as a
Celery worker runs many tasks at once and acknowledges each when it ends: in one
transaction the job answers their watchdog entries and puts each in Later due
SAFETY_NET seconds on (a visibility timeout); the process beats their heartbeats,
so their ledger claims hold; each one's own commit takes its entry out of Later.
A worker that dies with sends handed over leaves those entries to run them again,
and the ledger's claim (its owner's heartbeat gone) counts the resend. A job never
waits past half its own timeout. A forked work-horse (`orchestrator worker --burst`)
ends with its job, so there a job waits for all its sends, as before. The answers of
sends that end together are committed together (orchestrator.runtime.notify.commits).

Templates render on the send threads: a render's CPU limit watches the
rendering thread's own CPU clock (notifiers.render_limit), whichever thread it is.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis
from rq import get_current_job

from notifiers import templates
from orchestrator.core.events import Event
from orchestrator.runtime import metrics, tracing
from orchestrator.runtime.context import WorkerContext
from orchestrator.runtime.heartbeat import Beating
from orchestrator.runtime.notify.delivery import Render
from orchestrator.runtime.notify.handover import SAFETY_NET as SAFETY_NET
from orchestrator.runtime.notify.handover import await_sends, process_of
from orchestrator.runtime.notify.handover import handed_over as handed_over
from orchestrator.runtime.notify.ledger import Claim
from orchestrator.runtime.notify.sending import HANDING, Parts, Send
from orchestrator.runtime.payloads import NotificationPayload, inbox_of
from orchestrator.store.commit import commit

log = logging.getLogger("orchestrator.runtime.notify.batch")

_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def send_batch(
    connection: redis.Redis,
    items: list[NotificationPayload],
    heartbeat: Beating,
    context: WorkerContext,
) -> list[tuple[NotificationPayload, BaseException]]:
    """Send a packed job's items at the same time, each as a job of its own would be (its
    key where a job's id would be); returns the items that raised, with their errors."""
    job = get_current_job()
    assert job is not None, "orchestrator jobs run inside an RQ worker"
    began = time.monotonic()
    parts = Parts(connection, context)
    sends = [Send(item, item["key"], heartbeat) for item in items]
    claims = parts.claim(sends, templates.render)  # every item's own claim, in one round trip
    for send, claim in zip(sends, claims, strict=True):
        send.future = pool(parts.context.notify_threads).submit(
            _send, connection, send, parts, templates.render, claim
        )
    await_sends(job, parts, sends, began)
    return [
        (send.payload, error)
        for send in sends
        if send.handed is None
        and not send.started.cancelled()
        and (error := send.started.exception()) is not None
    ]


def send_and_answer(
    connection: redis.Redis,
    payload: NotificationPayload,
    job_id: str,
    heartbeat: Beating,
    context: WorkerContext,
    render: Render = templates.render,
) -> None:
    """Deliver one notification, then record and answer in one transaction: the ledger's
    outcome, retry later or not, the watchdog entry `job_id` removed, the event, the end
    of the heartbeat. A worker that dies before it leaves the claim to be taken over.
    In a notification worker the send runs on a send thread, handed over if it is slow
    (see the module's docstring); elsewhere, here."""
    parts = Parts(connection, context)
    send = Send(payload, job_id, heartbeat)
    job = get_current_job()
    if job is None or not context.installed_here():
        _send(connection, send, parts, render)
        return
    began = time.monotonic()
    send.future = pool(parts.context.notify_threads).submit(_send, connection, send, parts, render)
    await_sends(job, parts, [send], began)
    if send.handed is None:
        send.started.result()  # its error fails the job, as if it had been raised here


def _send(
    connection: redis.Redis,
    send: Send,
    parts: Parts,
    render: Render,
    claim: Claim | None = None,
) -> None:
    """Deliver, then commit the answer; a handed-over send's error is logged here, since
    no job waits for it (its safety net runs it again)."""
    try:
        if tracing.enabled:  # one look a send (orchestrator.runtime.tracing)
            _traced(connection, send, parts, render, claim)
        else:
            _deliver(connection, send, parts, render, claim)
    except BaseException:
        with HANDING:
            send.committing, handed = True, send.handed is not None
        if not handed:
            raise
        send.heartbeat.stop(send.alive)
        process_of(connection).finished()
        log.exception("notification %s failed after its job handed it over", send.job_id)


def _traced(
    connection: redis.Redis, send: Send, parts: Parts, render: Render, claim: Claim | None
) -> None:
    """`_deliver` in a span `notify <channel>`, child of the job's trace; the answer
    (notification.sent/failed) carries the span's context."""
    payload = send.payload
    attributes = {
        tracing.INSTANCE: payload["instance"],
        tracing.WORKFLOW: payload.get("workflow"),
        tracing.CHANNEL: payload["channel"],
        tracing.ATTEMPT: payload.get("attempt", 1),
    }
    name = f"notify {payload['channel']}"
    with tracing.span(name, payload.get("trace"), attributes, "PRODUCER") as span:
        _deliver(connection, send, parts, render, claim, tracing.traceparent_of(span))


def _deliver(
    connection: redis.Redis,
    send: Send,
    parts: Parts,
    render: Render,
    claim: Claim | None,
    trace: str | None = None,
) -> None:
    payload, job_id = send.payload, send.job_id
    deliverer, later, outstanding = parts.of(payload, render)
    pipe = commit(connection)  # its replies are only looked at for errors (Commits)
    outcome = deliverer.deliver(payload, job_id, pipe, claim, send.alive)  # ledger writes wait
    if outcome.later is not None:
        again = payload.copy()
        again["attempt"] = payload.get("attempt", 1) + (1 if outcome.tried else 0)
        later.add(again, outcome.later, pipe)
    outstanding.answered(pipe, payload["partition"], job_id)
    instance = payload["instance"]
    if outcome.event is not None and instance:
        event = Event(
            id=f"{outcome.data['key']}-{outcome.event}",
            type=outcome.event,
            instance_id=instance,
            at=time.time(),
            data=outcome.data,
            trace=trace,
        )
        pipe.xadd(inbox_of(payload), {"e": event.to_json()})
    with HANDING:  # from here its job cannot hand it over, nor can it be half handed over
        send.committing = True
        net, heartbeat = send.handed, send.heartbeat
    if net is not None:
        pipe.zrem(later.keys.notify_later, net)
    if send.alive:
        heartbeat.done(send.alive, pipe)
    parts.commits.commit(pipe)
    if net is not None:
        process_of(connection).finished()
    counts = metrics.current()  # None with ORCHESTRATOR_METRICS=0
    if counts is not None:
        counts.notification(payload["channel"], outcome.status)


def pool(threads: int) -> ThreadPoolExecutor:
    """The process's send threads (a forked child makes its own): kept between jobs, so
    that their connections are too. `threads` is the process's context's, the same for
    every job."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(threads, thread_name_prefix="notify"))
        return _pool[1]

"""Several notifications in one RQ job, sent at the same time.

Why: a provider takes tens to hundreds of milliseconds to answer. One job per
notification, run one after another by a notification worker, sends ten a
second against a server that answers in 100 ms, whatever the machine. So the
dispatcher packs the notifications one commit makes ready into one job
(orchestrator.dispatch), and this runs its items on a pool of threads that
the worker process keeps, as are the channels' connections: the email channel
keeps an open SMTP connection per concurrent send, the SMS channel an HTTP
session per thread (notifiers.email, notifiers.sms).

Each item is exactly what a job of its own would be (`send_one` is what
`orchestrator.jobs.send_notification` runs), its key standing where a job's
id would: its own ledger claim, held by its own heartbeat key; then its
ledger outcome, its retry through Later, its watchdog entry answered, its
event and the end of its heartbeat, committed in one transaction as soon as
that item is done. A job that dies part way loses nothing that finished;
the others stop beating, and the watchdog runs them again. An item that
raised fails the job (after the others finished), so that the watchdog
sees it.

Templates render on the job's own thread, the main one: a render's CPU limit
is a signal timer (notifiers.sandbox), and signals reach only the main
thread. The pool threads hand their renders over and wait for them.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import redis
from rq import get_current_job
from rq.timeouts import BaseTimeoutException

from notifiers import templates
from notifiers.delivery import Deliverer, Render
from notifiers.registry import Notifiers
from orchestrator.events import Event
from orchestrator.jobs import Heartbeat, _notifiers
from orchestrator.keys import Keys
from orchestrator.later import Later
from orchestrator.watchdog import Watchdog

log = logging.getLogger("notifiers.batch")
THREADS = 64  # sends at the same time in one worker process
T = TypeVar("T")

_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def send_notifications(payload: dict[str, Any]) -> None:
    """The RQ entry point of a packed job: `{"items": [a send_notification payload, ...]}`."""
    job = get_current_job()
    assert job is not None, "orchestrator jobs run inside an RQ worker"
    items: list[dict[str, Any]] = list(payload["items"])
    connection: redis.Redis = job.connection
    notifiers = _notifiers()
    main = MainThread()
    alive = [str(item["alive"]) for item in items if item.get("alive")]
    with Heartbeat(connection, alive) as heartbeat:
        futures = [
            pool().submit(
                send_one, connection, item, str(item["key"]), heartbeat, notifiers, main.render
            )
            for item in items
        ]
        main.serve(futures)
    failures = [
        (item, error)
        for item, future in zip(items, futures, strict=True)
        if not future.cancelled() and (error := future.exception()) is not None
    ]
    for item, error in failures:
        log.error("notification %s failed in job %s: %r", item.get("key"), job.id, error)
    if failures:
        raise failures[0][1]  # RQ records the job failed: the watchdog runs the rest again


def send_one(
    connection: redis.Redis,
    payload: dict[str, Any],
    job_id: str,
    heartbeat: Heartbeat,
    notifiers: Notifiers,
    render: Render = templates.render,
) -> None:
    """Deliver one notification, then record and answer in one transaction: the ledger's
    outcome, retry later or not, the watchdog entry `job_id` removed, the event, the end
    of the heartbeat. A worker that dies before it leaves the claim to be taken over."""
    keys = Keys(str(payload.get("namespace", "orch")), int(payload.get("partitions", 8)))
    deliverer = Deliverer(connection, keys, os.environ, notifiers, render)
    pipe = connection.pipeline(transaction=True)
    outcome = deliverer.deliver(payload, job_id, pipe)  # its ledger writes wait in pipe
    if outcome.later is not None:
        again = {**payload, "attempt": int(payload.get("attempt", 1)) + 1}
        Later(connection, keys).add(again, outcome.later, pipe)
    Watchdog(connection, keys).answered(pipe, int(payload.get("partition", 0)), job_id)
    if outcome.event is not None and payload.get("instance"):
        event = Event(
            id=f"{outcome.data['key']}-{outcome.event}",
            type=outcome.event,
            instance_id=payload["instance"],
            at=time.time(),
            data=outcome.data,
        )
        pipe.xadd(payload["inbox"], {"e": event.to_json()})
    if payload.get("alive"):
        heartbeat.done(str(payload["alive"]), pipe)
    pipe.execute()


def pool() -> ThreadPoolExecutor:
    """The process's send threads (a forked child makes its own): kept between jobs, so
    that their connections are too."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(THREADS, thread_name_prefix="notify"))
        return _pool[1]


class MainThread:
    """Calls that pool threads hand to the thread that made this (the job's), run by
    `serve` while it waits for the items.

    When `serve` ends early (the job's timeout fired there), calls still waiting or
    arriving later fail instead of waiting forever, items not started are cancelled,
    and `serve` returns only once the started ones are done.
    """

    def __init__(self) -> None:
        self.thread = threading.current_thread()
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._open = True

    def call(self, fn: Callable[[], T]) -> T:
        if threading.current_thread() is self.thread:
            return fn()
        done: Future[T] = Future()
        with self._lock:
            if not self._open:
                raise RuntimeError("the job's thread stopped taking calls (the job ended)")
            self._calls.put((done, fn))
        return done.result()

    def render(
        self,
        module: str | None,
        name: str,
        channel: str,
        context: dict[str, Any],
        locale: str | None = None,
    ) -> templates.Rendered:
        return self.call(lambda: templates.render(module, name, channel, context, locale))

    def serve(self, futures: Sequence[Future[Any]]) -> None:
        """Run the handed-over calls until every future is done."""
        left = len(futures)
        for future in futures:
            future.add_done_callback(lambda _: self._calls.put(None))
        try:
            while left:
                call = self._calls.get()
                if call is None:
                    left -= 1
                    continue
                done, fn = call
                try:
                    done.set_result(fn())
                except BaseTimeoutException as exc:  # the job's own timeout: it ends here
                    done.set_exception(exc)
                    raise
                except Exception as exc:
                    done.set_exception(exc)
        finally:
            self._close(futures)

    def _close(self, futures: Sequence[Future[Any]]) -> None:
        with self._lock:
            self._open = False
        for future in futures:
            future.cancel()  # those not started: their heartbeat ends, the watchdog runs them
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            if call is not None:
                call[0].set_exception(RuntimeError("the job ended before this render"))
        wait(futures)

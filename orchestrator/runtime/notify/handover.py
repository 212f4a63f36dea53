"""A slow send does not hold its worker (issue #11): waiting for a job's sends, and
handing those still in flight over to the process.

A job waits for its sends only while they are quick (HOLD) or while the worker has
nothing else to do. Once another job waits in the queue, the sends still in flight
are handed over to the process: in one transaction the job answers their watchdog
entries and puts each in Later due SAFETY_NET seconds on (a visibility timeout); the
process beats their heartbeats, so their ledger claims hold; each one's own commit
takes its entry out of Later. A job never waits past half its own timeout. A forked
work-horse ends with its job, so there a job waits for all its sends.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import wait

import redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job
from rq.timeouts import BaseTimeoutException

from notifiers import templates
from orchestrator.runtime.heartbeat import Heartbeat
from orchestrator.runtime.notify.sending import HANDING, Parts, Send
from orchestrator.runtime.payloads import NOTIFICATION_TIMEOUT

log = logging.getLogger("orchestrator.runtime.notify.handover")
HOLD = 0.02  # seconds a job waits for its sends before it may hand the rest over
TICK = 0.01  # how often a waiting job looks at its sends and its queue
SAFETY_NET = float(NOTIFICATION_TIMEOUT)  # a handed-over send unanswered by then runs again


def await_sends(job: Job, parts: Parts, sends: Sequence[Send], began: float) -> None:
    """Wait for the sends; past HOLD, hand those still in flight over to the process when
    another job waits in the queue, or when half the job's own timeout is gone."""
    futures = [send.started for send in sends]
    queue = Queue.redis_queue_namespace_prefix + job.origin
    limit = job.timeout if job.timeout and job.timeout > 0 else NOTIFICATION_TIMEOUT
    give_up = began + limit / 2
    handing = parts.context.installed_here()  # not RQ's forked work-horse
    try:
        while True:
            _, pending = wait(futures, timeout=TICK if handing else None)
            if not pending:
                return
            now = time.monotonic()
            if now - began < HOLD or process_of(parts.connection).full(
                parts.context.notify_threads
            ):
                continue
            if now < give_up and not parts.connection.llen(queue):
                continue
            if _hand_over(parts, [send for send in sends if send.future in pending]):
                wait([send.started for send in sends if send.handed is None])  # committing
                return
    except BaseTimeoutException:  # the job's own timeout: sends not started are dropped
        for future in futures:  # (their heartbeats end with the job's; the watchdog runs
            future.cancel()  # them again), those started end first
        wait(futures)
        raise


def _hand_over(parts: Parts, sends: Sequence[Send]) -> bool:
    """Hand sends still in flight over to the process: their watchdog entries answered and
    their safety nets in Later, in one transaction, then their heartbeats beaten here."""
    process = process_of(parts.connection)
    with HANDING:
        moving = [send for send in sends if not send.committing and send.handed is None]
        if not moving:
            return True
        pipe = parts.connection.pipeline(transaction=True)
        nets = []
        for send in moving:
            _, later, outstanding = parts.of(send.payload, templates.render)
            nets.append(later.add(send.payload, time.time() + SAFETY_NET, pipe))
            outstanding.answered(pipe, send.payload["partition"], send.job_id)
        try:
            pipe.execute()
        except redis.RedisError:
            log.warning("could not hand sends over; the job waits for them", exc_info=True)
            return False
        for send, net in zip(moving, nets, strict=True):
            process.take(send.alive)
            send.heartbeat.stop(send.alive)
            send.heartbeat, send.handed = process, net
    log.info("job handed %d slow sends over to the process", len(moving))
    return True


class Process:
    """The sends this process took over from their jobs: how many are in flight, and their
    heartbeats, beaten with every job's by the process's beating thread while they run."""

    def __init__(self, connection: redis.Redis) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.heartbeat = Heartbeat(connection, ()).__enter__()  # for the process's life

    def full(self, most: int) -> bool:
        """Whether `most` sends (the process's send threads) are handed over and in
        flight: past it, jobs wait for their own."""
        return self.in_flight >= most

    def take(self, key: str) -> None:
        with self.lock:
            self.in_flight += 1
        if key:
            self.heartbeat.add(key)

    def finished(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def done(self, key: str, pipe: Pipeline) -> None:
        self.heartbeat.done(key, pipe)

    def stop(self, key: str) -> None:
        self.heartbeat.stop(key)


_processes: dict[int, Process] = {}
_processes_lock = threading.Lock()


def handed_over() -> int:
    """Sends this process took over from their jobs and is still sending."""
    found = _processes.get(os.getpid())
    return found.in_flight if found is not None else 0


def process_of(connection: redis.Redis) -> Process:
    """This process's (a forked child makes its own)."""
    with _processes_lock:
        found = _processes.get(os.getpid())
        if found is None:
            found = _processes[os.getpid()] = Process(connection)
        return found

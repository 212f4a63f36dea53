"""Several notifications in one RQ job, sent at the same time; and a slow send
that does not hold its worker.

Why: a provider takes tens to hundreds of milliseconds to answer. One job per
notification, run one after another by a notification worker, sends ten a
second against a server that answers in 100 ms, whatever the machine. So the
dispatcher packs the notifications one commit makes ready into one job
(orchestrator.runtime.dispatch), and this runs its items on a pool of threads that
the worker process keeps, as are the channels' connections: the email channel
keeps an open SMTP connection per concurrent send, the SMS channel an HTTP
session per thread (notifiers.email, notifiers.sms).

Each item is exactly what a job of its own would be (`send_one` is what
`orchestrator.runtime.jobs.send_notification` runs), its key standing where a job's
id would: its own ledger claim, held by its own heartbeat key; then its
ledger outcome, its retry through Later, its watchdog entry answered, its
event and the end of its heartbeat, committed in one transaction as soon as
that item is done. A job that dies part way loses nothing that finished;
the others stop beating, and the watchdog runs them again. An item that
raised fails the job (after the others finished), so that the watchdog
sees it.

A slow send does not hold the worker (issue #11): a webhook receiver that never
answers kept each try on the worker for its whole timeout, and every other
notification queued behind it. So a job waits for its sends only while they are
quick (HOLD) or while the worker has nothing else to do. Once another job waits
in the queue, the sends still in flight are handed over to the process, as a
Celery worker runs many tasks at once and acknowledges each when it ends: in one
transaction the job answers their watchdog entries and puts each in Later due
SAFETY_NET seconds on (a visibility timeout); the process beats their heartbeats,
so their ledger claims hold; each one's own commit takes its entry out of Later.
A worker that dies with sends handed over leaves those entries to run them again,
and the ledger's claim (its owner's heartbeat gone) counts the resend. A job never
waits past half its own timeout. A forked work-horse (`orchestrator worker --burst`)
ends with its job, so there a job waits for all its sends, as before.

Templates render on the send threads: a render's CPU limit watches the
rendering thread's own CPU clock (notifiers.sandbox), whichever thread it is.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

import redis
from redis.client import Pipeline
from rq import Queue, get_current_job
from rq.job import Job
from rq.timeouts import BaseTimeoutException

from notifiers import templates
from notifiers.registry import Notifiers
from orchestrator.core.events import Event
from orchestrator.runtime.dispatch import NOTIFICATION_TIMEOUT
from orchestrator.runtime.jobs import Heartbeat, _notifiers
from orchestrator.runtime.notify.delivery import Deliverer, Render
from orchestrator.runtime.notify.later import Later
from orchestrator.runtime.notify.ledger import Ask, Claim
from orchestrator.runtime.watchdog import HEARTBEAT_EVERY, HEARTBEAT_TTL, Watchdog
from orchestrator.store.keys import Keys

log = logging.getLogger("orchestrator.runtime.notify.batch")
THREADS = 64  # sends at the same time in one worker process
HOLD = 0.02  # seconds a job waits for its sends before it may hand the rest over
TICK = 0.01  # how often a waiting job looks at its sends and its queue
SAFETY_NET = float(NOTIFICATION_TIMEOUT)  # a handed-over send unanswered by then runs again
HANDED_MOST = THREADS  # sends handed over and in flight in one process; past it, jobs wait

_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()
_handing = threading.Lock()  # a job handing sends over, or a send marking itself committing


def send_notifications(payload: dict[str, Any]) -> None:
    """The RQ entry point of a packed job: `{"items": [a send_notification payload, ...]}`."""
    job = get_current_job()
    assert job is not None, "orchestrator jobs run inside an RQ worker"
    began = time.monotonic()
    items: list[dict[str, Any]] = list(payload["items"])
    connection: redis.Redis = job.connection
    notifiers = _notifiers()
    alive = [str(item["alive"]) for item in items if item.get("alive")]
    parts = _Parts(connection, notifiers)
    with Heartbeat(connection, alive) as heartbeat:
        claims = parts.claim(items)  # every item's own claim, made in one round trip
        sends = [_Send(item, str(item["key"]), heartbeat) for item in items]
        for send, claim in zip(sends, claims, strict=True):
            send.future = pool().submit(_send, connection, send, parts, templates.render, claim)
        _await(job, parts, sends, began)
    failures = [
        (send.payload, error)
        for send in sends
        if send.handed is None
        and not send.started.cancelled()
        and (error := send.started.exception()) is not None
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
    of the heartbeat. A worker that dies before it leaves the claim to be taken over.
    In a notification worker the send runs on a send thread, handed over if it is slow
    (see the module's docstring); elsewhere, here."""
    parts = _Parts(connection, notifiers)
    send = _Send(payload, job_id, heartbeat)
    job = get_current_job()
    if job is None or not _lives_on(job):
        _send(connection, send, parts, render)
        return
    began = time.monotonic()
    send.future = pool().submit(_send, connection, send, parts, render)
    _await(job, parts, [send], began)
    if send.handed is None:
        send.started.result()  # its error fails the job, as if it had been raised here


class _Beating(Protocol):
    def done(self, key: str, pipe: Pipeline) -> None: ...
    def stop(self, key: str) -> None: ...


class _Send:
    """One notification being sent, and who answers for it: its job, or the process."""

    def __init__(self, payload: dict[str, Any], job_id: str, heartbeat: _Beating) -> None:
        self.payload, self.job_id = payload, job_id
        self.alive = str(payload.get("alive") or "")
        self.heartbeat = heartbeat  # who beats its heartbeat now
        self.future: Future[None] | None = None
        self.committing = False  # its answer is being committed: no handing over now
        self.handed: str | None = None  # its safety net's member in Later, once handed over

    @property
    def started(self) -> Future[None]:
        assert self.future is not None, "a send waited for is submitted first"
        return self.future


def _send(
    connection: redis.Redis,
    send: _Send,
    parts: _Parts,
    render: Render,
    claim: Claim | None = None,
) -> None:
    """Deliver, then commit the answer; a handed-over send's error is logged here, since
    no job waits for it (its safety net runs it again)."""
    try:
        _deliver(connection, send, parts, render, claim)
    except BaseException:
        with _handing:
            send.committing, handed = True, send.handed is not None
        if not handed:
            raise
        send.heartbeat.stop(send.alive)
        _process(connection).finished()
        log.exception("notification %s failed after its job handed it over", send.job_id)


def _deliver(
    connection: redis.Redis,
    send: _Send,
    parts: _Parts,
    render: Render,
    claim: Claim | None,
) -> None:
    payload, job_id = send.payload, send.job_id
    deliverer, later, watchdog = parts.of(payload, render)
    pipe = connection.pipeline(transaction=True)
    outcome = deliverer.deliver(payload, job_id, pipe, claim)  # its ledger writes wait in pipe
    if outcome.later is not None:
        attempt = int(payload.get("attempt", 1)) + (1 if outcome.tried else 0)
        later.add({**payload, "attempt": attempt}, outcome.later, pipe)
    watchdog.answered(pipe, int(payload.get("partition", 0)), job_id)
    if outcome.event is not None and payload.get("instance"):
        event = Event(
            id=f"{outcome.data['key']}-{outcome.event}",
            type=outcome.event,
            instance_id=payload["instance"],
            at=time.time(),
            data=outcome.data,
        )
        pipe.xadd(payload["inbox"], {"e": event.to_json()})
    with _handing:  # from here its job cannot hand it over, nor can it be half handed over
        send.committing = True
        net, heartbeat = send.handed, send.heartbeat
    if net is not None:
        pipe.zrem(later.keys.notify_later, net)
    if send.alive:
        heartbeat.done(send.alive, pipe)
    parts.commits.commit(pipe)
    if net is not None:
        _process(connection).finished()


def _lives_on(job: Job) -> bool:
    """Whether this process outlives the job: not RQ's forked work-horse (RQ names the job
    it forked for in RQ_JOB_ID), which exits as soon as its job returns."""
    return os.environ.get("RQ_JOB_ID") != job.id


def _await(job: Job, parts: _Parts, sends: Sequence[_Send], began: float) -> None:
    """Wait for the sends; past HOLD, hand those still in flight over to the process when
    another job waits in the queue, or when half the job's own timeout is gone."""
    futures = [send.started for send in sends]
    queue = Queue.redis_queue_namespace_prefix + job.origin
    limit = job.timeout if job.timeout and job.timeout > 0 else NOTIFICATION_TIMEOUT
    give_up = began + limit / 2
    handing = _lives_on(job)
    try:
        while True:
            _, pending = wait(futures, timeout=TICK if handing else None)
            if not pending:
                return
            now = time.monotonic()
            if now - began < HOLD or _process(parts.connection).full():
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


def _hand_over(parts: _Parts, sends: Sequence[_Send]) -> bool:
    """Hand sends still in flight over to the process: their watchdog entries answered and
    their safety nets in Later, in one transaction, then their heartbeats beaten here."""
    process = _process(parts.connection)
    with _handing:
        moving = [send for send in sends if not send.committing and send.handed is None]
        if not moving:
            return True
        pipe = parts.connection.pipeline(transaction=True)
        nets = []
        for send in moving:
            _, later, watchdog = parts.of(send.payload, templates.render)
            later.add(send.payload, time.time() + SAFETY_NET, pipe)
            nets.append(json.dumps(send.payload, sort_keys=True))  # Later's member for it
            watchdog.answered(pipe, int(send.payload.get("partition", 0)), send.job_id)
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


class _Process:
    """The sends this process took over from their jobs: how many are in flight, and their
    heartbeats, refreshed from a thread of its own while they run."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection
        self.lock = threading.Lock()
        self.keys: set[str] = set()
        self.in_flight = 0
        self.thread = threading.Thread(target=self._beat, name="handed-over", daemon=True)
        self.thread.start()

    def full(self) -> bool:
        return self.in_flight >= HANDED_MOST

    def take(self, key: str) -> None:
        with self.lock:
            self.in_flight += 1
            if key:
                self.keys.add(key)

    def finished(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def done(self, key: str, pipe: Pipeline) -> None:
        self.stop(key)
        pipe.delete(key)

    def stop(self, key: str) -> None:
        with self.lock:
            self.keys.discard(key)

    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_EVERY)
            with self.lock:
                keys = list(self.keys)
            if not keys:
                continue
            try:
                pipe = self.redis.pipeline(transaction=False)
                for key in keys:
                    pipe.set(key, 1, ex=HEARTBEAT_TTL)
                pipe.execute()
            except Exception:  # a missed beat is retried; the sends must not die of it
                log.warning("heartbeat of handed-over sends failed", exc_info=True)


_processes: dict[int, _Process] = {}


def handed_over() -> int:
    """Sends this process took over from their jobs and is still sending."""
    found = _processes.get(os.getpid())
    return found.in_flight if found is not None else 0


def _process(connection: redis.Redis) -> _Process:
    """This process's (a forked child makes its own)."""
    with _pool_lock:
        found = _processes.get(os.getpid())
        if found is None:
            found = _processes[os.getpid()] = _Process(connection)
        return found


class _Parts:
    """What sends a job's items, built once a job rather than once an item (each registers
    its Lua scripts): they keep no state between calls, so the send threads share them."""

    def __init__(self, connection: redis.Redis, notifiers: Notifiers) -> None:
        self.connection, self.notifiers = connection, notifiers
        self.commits = _Commits(connection)
        self._made: dict[tuple[str, int, Render], tuple[Deliverer, Later, Watchdog]] = {}
        self._lock = threading.Lock()

    def claim(self, items: Sequence[dict[str, Any]]) -> list[Claim | None]:
        """Each item's ledger claim, as its delivery would make it, all in one round trip;
        None for one not made here (its delivery makes it, and meets any error there)."""
        claims: list[Claim | None] = [None] * len(items)
        asks: dict[Deliverer, list[tuple[int, Ask]]] = {}
        for index, item in enumerate(items):
            try:
                deliverer = self.of(item, templates.render)[0]
                ask = deliverer.ask(item, str(item["key"]))
            except Exception:  # a malformed item: it fails on its own, in its thread
                continue
            asks.setdefault(deliverer, []).append((index, ask))
        for deliverer, pairs in asks.items():
            made = deliverer.ledger.claim_many([ask for _, ask in pairs])
            for (index, _), claim in zip(pairs, made, strict=True):
                claims[index] = claim
        return claims

    def of(self, payload: dict[str, Any], render: Render) -> tuple[Deliverer, Later, Watchdog]:
        namespace, partitions = (
            str(payload.get("namespace", "orch")),
            int(payload.get("partitions", 8)),
        )
        key = (namespace, partitions, render)
        with self._lock:
            made = self._made.get(key)
            if made is None:
                keys, client = Keys(namespace, partitions), self.connection
                made = self._made[key] = (
                    Deliverer(client, keys, os.environ, self.notifiers, render),
                    Later(client, keys),
                    Watchdog(client, keys),
                )
        return made


class _Commits:
    """The items' transactions, committed together when several are ready at once, as a
    job's items are (their provider answers them within milliseconds of each other): one
    round trip, and one request for Redis to serve, instead of one each. No item waits
    for another to be ready: a transaction ready while none is being committed goes at
    once, and those that become ready meanwhile go together next. Each is still whole
    (one MULTI/EXEC holds them all), and its thread returns once it is committed, or
    raises its own error."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self._lock = threading.Lock()
        self._ready: list[_Ready] = []
        self._busy = False  # a thread is committing: those ready meanwhile leave it to it

    def commit(self, pipe: Pipeline) -> None:
        mine = _Ready(pipe)
        with self._lock:
            self._ready.append(mine)
            lead, self._busy = not self._busy, True
        if lead:
            self._lead()
        mine.done.wait()
        if mine.error is not None:
            raise mine.error

    def _lead(self) -> None:
        group: list[_Ready] = []
        try:
            while True:
                with self._lock:
                    group, self._ready = self._ready, []
                    if not group:
                        self._busy = False
                        return
                self._run(group)
        except BaseException as exc:  # never leave a thread waiting for a commit
            with self._lock:
                left, self._ready, self._busy = group + self._ready, [], False
            for ready in left:
                if not ready.done.is_set():
                    ready.error = exc
                    ready.done.set()
            raise

    def _run(self, group: list[_Ready]) -> None:
        if len(group) > 1:
            merged = self.connection.pipeline(transaction=True)
            for ready in group:
                merged.command_stack.extend(ready.pipe.command_stack)
                merged.scripts.update(ready.pipe.scripts)
            try:
                replies = merged.execute(raise_on_error=False)
            except redis.ResponseError:
                pass  # refused before it ran (EXECABORT): each on its own, to fail alone
            except Exception as exc:
                self._answer(group, exc)
                return
            else:
                self._answer(group, None, replies, merged)
                return
        for ready in group:
            try:
                ready.pipe.execute()
            except Exception as exc:
                ready.error = exc
            ready.done.set()

    @staticmethod
    def _answer(
        group: list[_Ready],
        error: Exception | None,
        replies: list[Any] | None = None,
        merged: Pipeline | None = None,
    ) -> None:
        """Each transaction's own outcome: the group's error, or the first error among its
        own replies, as its own execute would raise it."""
        at = 0
        for ready in group:
            ready.error = error
            if replies is not None and merged is not None:
                stack = ready.pipe.command_stack
                for number, reply in enumerate(replies[at : at + len(stack)], start=1):
                    if isinstance(reply, redis.ResponseError):
                        merged.annotate_exception(reply, number, stack[number - 1][0])  # type: ignore[no-untyped-call]
                        ready.error = reply
                        break
                at += len(stack)
            ready.done.set()


class _Ready:
    __slots__ = ("done", "error", "pipe")

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe
        self.done = threading.Event()
        self.error: BaseException | None = None


def pool() -> ThreadPoolExecutor:
    """The process's send threads (a forked child makes its own): kept between jobs, so
    that their connections are too."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(THREADS, thread_name_prefix="notify"))
        return _pool[1]

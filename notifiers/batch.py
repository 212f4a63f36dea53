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

Templates render on the send threads: a render's CPU limit watches the
rendering thread's own CPU clock (notifiers.sandbox), whichever thread it is.
The job's own thread waits for the items (`MainThread.serve`), where RQ's job
timeout lands.
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
from redis.client import Pipeline
from rq import get_current_job
from rq.timeouts import BaseTimeoutException

from notifiers import templates
from notifiers.delivery import Deliverer, Render
from notifiers.ledger import Ask, Claim
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
    parts = _Parts(connection, notifiers)
    with Heartbeat(connection, alive) as heartbeat:
        claims = parts.claim(items)  # every item's own claim, made in one round trip
        futures = [
            pool().submit(
                send_one,
                connection,
                item,
                str(item["key"]),
                heartbeat,
                notifiers,
                templates.render,
                parts,
                claim,
            )
            for item, claim in zip(items, claims, strict=True)
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
    parts: _Parts | None = None,
    claim: Claim | None = None,
) -> None:
    """Deliver one notification, then record and answer in one transaction: the ledger's
    outcome, retry later or not, the watchdog entry `job_id` removed, the event, the end
    of the heartbeat. A worker that dies before it leaves the claim to be taken over.
    `claim`: its ledger claim, when the job made it with the others'."""
    parts = parts or _Parts(connection, notifiers)
    deliverer, later, watchdog = parts.of(payload, render)
    pipe = connection.pipeline(transaction=True)
    outcome = deliverer.deliver(payload, job_id, pipe, claim)  # its ledger writes wait in pipe
    if outcome.later is not None:
        again = {**payload, "attempt": int(payload.get("attempt", 1)) + 1}
        later.add(again, outcome.later, pipe)
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
    if payload.get("alive"):
        heartbeat.done(str(payload["alive"]), pipe)
    parts.commits.commit(pipe)


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

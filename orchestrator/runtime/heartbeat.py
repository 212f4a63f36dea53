"""Heartbeats: how a running job tells the watchdog it is alive.

While a task or a notification runs (or waits its turn in a packed job), a short-lived
key is refreshed from a thread; the watchdog (orchestrator.runtime.watchdog) takes a
started job without one for a lost one, so a killed work-horse is noticed in seconds.

The thread is one a process (`_Beater`), beating every job's keys that run in it, not
one a job: a thread started and joined for every job cost a lone task 0.1-0.2 ms of a
step that takes about 1.5 ms in the task worker (in-process probe, this 2-core
machine), and it almost never beat (a task is done within the second).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

import redis
from redis.client import Pipeline

log = logging.getLogger("orchestrator.runtime.heartbeat")
HEARTBEAT_EVERY = 1.0  # a running job refreshes its heartbeat this often...
HEARTBEAT_TTL = 5  # ...and it expires this many seconds after the last refresh
Try = tuple[str, str]  # where a try is registered as outstanding: hash, field


class Beating(Protocol):
    """Who beats a heartbeat: a job's Heartbeat, or the process for a send handed over."""

    def done(self, key: str, pipe: Pipeline) -> None: ...
    def stop(self, key: str) -> None: ...


class Heartbeat:
    """Refreshes heartbeat keys (from the process's beating thread) while their work runs
    or waits its turn.

    A job carrying several tasks or notifications beats for each until that
    one is done.
    """

    def __init__(
        self,
        connection: redis.Redis,
        keys: Iterable[str],
        outstanding: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """`outstanding`: for a task's heartbeat key, where its try is registered as
        outstanding (hash, field). The first beat then also looks that each is still
        there, in the same round trip; one the watchdog already reported lost (during a
        pause longer than the heartbeat's life) is in `gone` and beats no more: its
        work must not run, the engine has moved on (orchestrator.runtime.watchdog)."""
        self.redis = connection
        self.keys = set(keys)
        self.outstanding = outstanding or {}
        self.gone: set[str] = set()
        self.lock = threading.Lock()  # the keys
        self.beating = threading.Lock()  # held through a beat: none runs after __exit__
        self.stopped = False

    def __enter__(self) -> Heartbeat:
        self._refresh(first=True)
        _beater.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _beater.remove(self)
        with self.beating:  # a beat under way ends first, and none starts after
            self.stopped = True
        with self.lock:
            left, self.keys = list(self.keys), set()
        if left:
            self.redis.delete(*left)

    def done(self, key: str, pipe: Pipeline) -> None:
        """Stop beating for `key`; its DELETE goes out with the caller's pipeline."""
        self.stop(key)
        pipe.delete(key)

    def stop(self, key: str) -> None:
        """Stop beating for `key` and leave it to expire (HEARTBEAT_TTL)."""
        with self.lock:
            self.keys.discard(key)

    def add(self, key: str) -> None:
        """Beat for `key` too from now on (a send its job handed over to the process)."""
        with self.lock:
            self.keys.add(key)

    def beat(self) -> None:
        """One refresh, from the beating thread; none once the work is done."""
        with self.beating:
            if not self.stopped:
                self._refresh()

    def _refresh(self, first: bool = False) -> None:
        with self.lock:
            keys = list(self.keys)
        if not keys:
            return
        checked = [key for key in keys if key in self.outstanding] if first else []
        found = _sent_first.take(keys, self.outstanding) if first else None
        if found is None:
            pipe = self.redis.pipeline(transaction=False)
            queue_beat(pipe, keys, [self.outstanding[key] for key in checked])
            found = pipe.execute()[len(keys) :]
        gone = {key for key, there in zip(checked, found, strict=True) if not there}
        if gone:  # rare: a pause past HEARTBEAT_TTL
            self.gone = gone
            with self.lock:
                self.keys -= gone
            self.redis.delete(*gone)


def queue_beat(pipe: Pipeline, keys: Iterable[str], outstanding: Iterable[Try]) -> None:
    """A beat on `pipe`: each key SET to live HEARTBEAT_TTL, then a look that each try
    (hash, field) is still registered as outstanding (after the SETs: the watchdog reports
    a try lost only when its key is missing)."""
    for key in keys:
        pipe.set(key, 1, ex=HEARTBEAT_TTL)
    for where in outstanding:
        pipe.hexists(*where)


def first_beat_sent(outstanding: Mapping[str, Try], found: Iterable[object]) -> None:
    """A job's first beat (`queue_beat` of its keys and tries) went out with its start,
    in the worker's transaction, and `found` is what each look answered: its Heartbeat
    uses that instead of a round trip of its own (orchestrator.entry.rq_bookkeeping)."""
    _sent_first.keep(outstanding, found)


class _SentFirst:
    """The first beat sent with the job that runs now in this process, until its
    Heartbeat takes it (one job at a time runs in a process that sends them)."""

    def __init__(self) -> None:
        self.pid = 0
        self.found: dict[str, tuple[Try, bool]] = {}

    def keep(self, outstanding: Mapping[str, Try], found: Iterable[object]) -> None:
        pairs = zip(outstanding.items(), found, strict=True)
        self.found = {key: (where, bool(there)) for (key, where), there in pairs}
        self.pid = os.getpid()

    def take(self, keys: list[str], outstanding: Mapping[str, Try]) -> list[bool] | None:
        """What the looks found, in the order of `keys` that have a try; None unless this
        process sent the beat of exactly these keys and tries."""
        kept, self.found = self.found, {}
        if self.pid != os.getpid() or set(kept) != set(keys):
            return None
        if any(kept[key][0] != outstanding.get(key) for key in keys):
            return None
        return [kept[key][1] for key in keys if key in outstanding]


_sent_first = _SentFirst()


class _Beater:
    """The process's beating thread: every HEARTBEAT_EVERY seconds, a beat for each
    Heartbeat running (each key is set on entering, so none goes longer unrefreshed).
    Started with the first Heartbeat of a process (a forked work-horse starts its own)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[Heartbeat] = set()
        self.pid = 0  # the process whose thread this is

    def add(self, heartbeat: Heartbeat) -> None:
        with self.lock:
            self.running.add(heartbeat)
            if self.pid != os.getpid():
                self.pid = os.getpid()
                threading.Thread(target=self._run, name="heartbeat", daemon=True).start()

    def remove(self, heartbeat: Heartbeat) -> None:
        with self.lock:
            self.running.discard(heartbeat)

    def _run(self) -> None:
        while True:
            time.sleep(HEARTBEAT_EVERY)
            with self.lock:
                running = list(self.running)
            for heartbeat in running:
                try:
                    heartbeat.beat()
                except Exception:  # a missed beat is retried; the work must not die of it
                    log.warning("heartbeat of %s failed", sorted(heartbeat.keys)[:3], exc_info=True)

    def after_fork(self) -> None:
        """In a forked child: the parent's thread is not here, nor its work."""
        self.lock = threading.Lock()
        self.running = set()
        self.pid = 0


_beater = _Beater()
os.register_at_fork(after_in_child=_beater.after_fork)

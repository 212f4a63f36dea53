"""Heartbeats: how a running job tells the watchdog it is alive.

While a task or a notification runs (or waits its turn in a packed job), a short-lived
key is refreshed from a thread; the watchdog (orchestrator.runtime.watchdog) takes a
started job without one for a lost one, so a killed work-horse is noticed in seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Protocol

import redis
from redis.client import Pipeline

log = logging.getLogger("orchestrator.runtime.heartbeat")
HEARTBEAT_EVERY = 1.0  # a running job refreshes its heartbeat this often...
HEARTBEAT_TTL = 5  # ...and it expires this many seconds after the last refresh


class Beating(Protocol):
    """Who beats a heartbeat: a job's Heartbeat, or the process for a send handed over."""

    def done(self, key: str, pipe: Pipeline) -> None: ...
    def stop(self, key: str) -> None: ...


class Heartbeat:
    """Refreshes heartbeat keys from a thread while their work runs or waits its turn.

    A job carrying several tasks or notifications beats for each until that
    one is done.
    """

    def __init__(self, connection: redis.Redis, keys: Iterable[str]) -> None:
        self.redis = connection
        self.keys = set(keys)
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._refresh()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()
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

    def _refresh(self) -> None:
        with self.lock:
            keys = list(self.keys)
        if not keys:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, 1, ex=HEARTBEAT_TTL)
        pipe.execute()

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_EVERY):
            try:
                self._refresh()
            except Exception:  # a missed beat is retried; the work must not die of it
                log.warning("heartbeat of %s failed", sorted(self.keys)[:3], exc_info=True)

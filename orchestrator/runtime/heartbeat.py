"""Heartbeats: how a running job tells the watchdog it is alive.

While a task or a notification runs (or waits its turn in a packed job), a short-lived
key is refreshed from a thread; the watchdog (orchestrator.runtime.watchdog) takes a
started job without one for a lost one, so a killed work-horse is noticed in seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
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
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._refresh(first=True)
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

    def _refresh(self, first: bool = False) -> None:
        with self.lock:
            keys = list(self.keys)
        if not keys:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, 1, ex=HEARTBEAT_TTL)
        checked = [key for key in keys if key in self.outstanding] if first else []
        for key in checked:  # after the SETs: the watchdog reports lost only without them
            pipe.hexists(*self.outstanding[key])
        found = pipe.execute()[len(keys) :]
        gone = {key for key, there in zip(checked, found, strict=True) if not there}
        if gone:  # rare: a pause past HEARTBEAT_TTL
            self.gone = gone
            with self.lock:
                self.keys -= gone
            self.redis.delete(*gone)

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_EVERY):
            try:
                self._refresh()
            except Exception:  # a missed beat is retried; the work must not die of it
                log.warning("heartbeat of %s failed", sorted(self.keys)[:3], exc_info=True)

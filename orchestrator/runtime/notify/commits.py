"""Committing the answers of sends that end at about the same time, together.

A packed job's items are answered by their provider within milliseconds of each
other; each commits its own transaction (its ledger outcome, its retry, its watchdog
entry, its event, the end of its heartbeat). Those ready while another is being
committed go together next: one round trip, and one request for Redis to serve,
instead of one each. No item waits for another to be ready.

The transactions are orchestrator.store.commit's, which read the QUEUED replies straight
off the connection (nobody reads these replies but for their errors): in the
notification benchmark, 181-189 us of the send threads' CPU a send went to committing
against 207-239 us through redis-py's pipeline (two pairs, `thread_time` around the
commit; the whole send took 1.3-1.45 ms, so the rate itself moved within its noise).
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from redis.client import Pipeline

from orchestrator.store.commit import commit


class Commits:
    """The items' transactions, committed together when several are ready at once: a
    transaction ready while none is being committed goes at once, and those that become
    ready meanwhile go together next. Each is still whole (one MULTI/EXEC holds them
    all), and its thread returns once it is committed, or raises its own error."""

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
            merged = commit(self.connection)
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

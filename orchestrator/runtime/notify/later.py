"""Notification jobs to run later: retries after a transient failure, quiet
hours, long rate-limit waits.

A job that must run again adds its payload to a sorted set by due time; the
appliers move due entries onto the notifications queue, removing and
enqueueing in one transaction, so an entry is never lost in between.

An entry the mover cannot read (not UTF-8, not JSON, not an object with a
string `key`, a partition that is not a number) would otherwise stop every
later one behind it, run after run: it moves to the dead letters instead, in
one transaction with its removal.
"""

from __future__ import annotations

import json
import time
from typing import Protocol, cast

import redis
from redis.client import Pipeline

from orchestrator.core.events import Unreadable
from orchestrator.runtime.payloads import NotificationPayload
from orchestrator.store.deadletters import dead_letter
from orchestrator.store.keys import Keys

MOVE_TRIES = 5  # looks at one entry while other writers keep changing the set


class Enqueuer(Protocol):
    """What moves a due entry onto the queue (orchestrator.runtime.dispatch.Dispatcher)."""

    def enqueue_notification(self, pipe: Pipeline, payload: NotificationPayload, job: str) -> None:
        """Enqueue the notification job `job` in `pipe`, watched."""


class Later:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def add(self, payload: NotificationPayload, due: float, pipe: Pipeline | None = None) -> str:
        """Run this notification job again at `due` (in the caller's transaction, if given);
        the entry's member, which takes it out again."""
        target = self.redis if pipe is None else pipe
        member = json.dumps(payload, sort_keys=True)
        target.zadd(self.keys.notify_later, {member: due})
        return member

    def next_due(self) -> float | None:
        first: list[tuple[bytes, float]] = self.redis.zrange(  # type: ignore[assignment]
            self.keys.notify_later, 0, 0, withscores=True
        )
        return first[0][1] if first else None

    def move_due(self, dispatcher: Enqueuer, now: float | None = None, limit: int = 200) -> int:
        now = time.time() if now is None else now
        due: list[bytes] = self.redis.zrangebyscore(  # type: ignore[assignment]
            self.keys.notify_later, "-inf", now, start=0, num=limit
        )
        moved = 0
        for member in due:
            try:
                payload = read_payload(member)
            except Unreadable as exc:
                self._set_aside(member, str(exc))
                continue
            job = f"{payload['key']}-a{payload.get('attempt', 1)}-{int(now * 1000)}"
            moved += self._move(dispatcher, member, payload, job)
        return moved

    def _move(
        self, dispatcher: Enqueuer, member: bytes, payload: NotificationPayload, job: str
    ) -> int:
        """Remove one entry and enqueue its job in one transaction, 1 if this mover did it.

        Removing and enqueueing commit together: a mover dying between them loses
        nothing. One applier moves (the holder of partition 0), but two may overlap during
        a lease handover: the set is WATCHed and the entry must still be there, so only
        one of them enqueues it (another's change to the set makes this one look again).
        """
        key = self.keys.notify_later
        with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(MOVE_TRIES):
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    if pipe.zscore(key, member) is None:
                        return 0  # another mover took it
                    pipe.multi()  # explicit: RQ's enqueue checks for it
                    pipe.zrem(key, member)
                    dispatcher.enqueue_notification(pipe, payload, job)
                    pipe.execute()
                    return 1
                except redis.WatchError:
                    continue
        return 0  # the set kept changing: the entry stays, for the next round

    def _set_aside(self, member: bytes, reason: str) -> None:
        """Move an unreadable entry to the dead letters, in one transaction."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.notify_later, member)
        key = self.keys.notify_later
        letter = dead_letter(
            "notify-later", key, "", member, f"unreadable entry of {key}: {reason}"
        )
        pipe.xadd(self.keys.deadletters, letter)  # type: ignore[arg-type]
        pipe.execute()


def read_payload(member: bytes) -> NotificationPayload:
    """A notify-later entry as the mover needs it; raises Unreadable saying what is wrong."""
    try:
        payload = json.loads(member.decode())
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 ({exc})") from None
    except (ValueError, RecursionError) as exc:
        raise Unreadable(f"not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise Unreadable(f"a notification job must be a JSON object, not {type(payload).__name__}")
    if not isinstance(payload.get("key"), str):
        raise Unreadable("'key' must be a string")
    for name in ("attempt", "partition"):
        value = payload.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Unreadable(f"{name!r} must be an integer, not {value!r:.50}")
    # Whatever else it holds, the worker's guard checks it before anything runs
    return cast(NotificationPayload, payload)

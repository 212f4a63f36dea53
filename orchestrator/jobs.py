"""The only functions RQ workers run: the task wrapper and the notification job.

The wrapper runs a user's task and reports back with an event, whatever
happens: `task.completed` with the result, or `task.failed` with the error's
type and message. The engine decides about retries; RQ runs each try once.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from rq import get_current_job

from orchestrator import events as ev
from orchestrator.events import Event
from orchestrator.keys import Keys
from orchestrator.later import Later
from orchestrator.limits import MAX_RESULT_BYTES, check_data
from orchestrator.watchdog import HEARTBEAT_EVERY, HEARTBEAT_TTL, Watchdog

log = logging.getLogger("orchestrator.jobs")


def load_task(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    if not attr:
        module_name, _, attr = path.rpartition(".")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{path} is not callable")
    return target  # type: ignore[no-any-return]


def run_task(payload: dict[str, Any]) -> None:
    kind = payload["kind"]
    done, failed = (
        (ev.COMPENSATION_COMPLETED, ev.COMPENSATION_FAILED)
        if kind == "compensation"
        else (ev.TASK_COMPLETED, ev.TASK_FAILED)
    )
    answer: dict[str, Any] = {
        "task": payload["task"],
        "state": payload["state"],
        "attempt": payload["attempt"],
        "entered_seq": payload["entered_seq"],
        "job": payload["job"],
    }
    with _Heartbeat(payload["alive"]):
        try:
            result = load_task(payload["task"])(dict(payload["context"]))
            check_data(
                result, "the task's result", MAX_RESULT_BYTES
            )  # fail the task, not the engine
        except Exception as exc:  # every failure of user code becomes an event
            log.info("task %s failed: %s: %s", payload["task"], type(exc).__name__, exc)
            error = {"error_type": type(exc).__name__, "message": str(exc)}
            _emit(payload, failed, {**answer, **error})
            return
        _emit(payload, done, {**answer, "result": result})


def send_notification(payload: dict[str, Any]) -> None:
    """Deliver one notification (notifiers.delivery) and tell the workflow how it went."""
    from notifiers.delivery import Deliverer  # channels and their SDKs load only here

    job = get_current_job()
    assert job is not None, "orchestrator jobs run inside an RQ worker"
    keys = Keys(str(payload.get("namespace", "orch")), int(payload.get("partitions", 8)))
    with _Heartbeat(payload["alive"]) if payload.get("alive") else nullcontext():
        deliverer = Deliverer(job.connection, keys, os.environ, _notifiers())
        outcome = deliverer.deliver(payload, job.id)
    pipe = job.connection.pipeline(transaction=True)
    if outcome.later is not None:
        again = {**payload, "attempt": int(payload.get("attempt", 1)) + 1}
        Later(job.connection, keys).add(again, outcome.later, pipe)
    Watchdog(job.connection, keys).answered(pipe, int(payload.get("partition", 0)), job.id)
    if outcome.event is not None and payload.get("instance"):
        event = Event(
            id=f"{outcome.data['key']}-{outcome.event}",
            type=outcome.event,
            instance_id=payload["instance"],
            at=time.time(),
            data=outcome.data,
        )
        pipe.xadd(payload["inbox"], {"e": event.to_json()})
    pipe.execute()


_channels: Any = None


def _notifiers() -> Any:
    """One set of notifiers per process, so SMTP connections and HTTP sessions are reused."""
    global _channels
    if _channels is None:
        from notifiers.registry import Notifiers

        _channels = Notifiers(os.environ)
    return _channels


def _emit(payload: dict[str, Any], event_type: str, data: dict[str, Any]) -> None:
    job = get_current_job()
    assert job is not None, "orchestrator jobs run inside an RQ worker"
    event = Event(
        id=f"{job.id}-{event_type}",
        type=event_type,
        instance_id=payload["instance"],
        at=time.time(),
        data=data,
    )
    job.connection.xadd(payload["inbox"], {"e": event.to_json()})


class _Heartbeat:
    """Refreshes the task's heartbeat key from a thread while the task runs.

    The watchdog (orchestrator.watchdog) takes a started job without a
    heartbeat for a lost one, so a killed work-horse is noticed in seconds.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.stopped = threading.Event()
        job = get_current_job()
        assert job is not None, "orchestrator jobs run inside an RQ worker"
        self.redis = job.connection
        self.thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.redis.set(self.key, 1, ex=HEARTBEAT_TTL)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()
        self.redis.delete(self.key)

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_EVERY):
            try:
                self.redis.set(self.key, 1, ex=HEARTBEAT_TTL)
            except Exception:  # a missed beat is retried; the task must not die of it
                log.warning("heartbeat of %s failed", self.key, exc_info=True)

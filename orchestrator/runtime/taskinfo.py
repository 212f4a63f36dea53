"""Who a running task is: `task_info()`, as Temporal's `activity.info()`.

The task wrapper (orchestrator.runtime.tasks) sets it around each call of a task or a
compensation; outside one, `task_info()` raises RuntimeError. The
idempotency key names the step, not the try: every try of a state's task in
one entry of that state (its retries, and a try run again after its worker
died) has the same key, and another state, another entry of the same state,
or the state's compensation has another. Pass it to the services a task
calls (a payment provider's idempotency key), and a try that ran but whose
answer was lost is not done twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

Kind = Literal["task", "compensation"]


@dataclass(frozen=True)
class TaskInfo:
    """The running try: its instance, workflow, state, kind, try number (from 1) and
    the idempotency key shared by every try of this step."""

    instance_id: str
    workflow: str
    version: int
    state: str
    kind: Kind
    attempt: int
    idempotency_key: str


def idempotency_key(instance_id: str, state: str, entered_seq: int, kind: Kind) -> str:
    """`instance:state:entry`, plus `:compensation` for the state's compensation. The
    entry (`entered_seq`, the instance's event count when it entered the state, or
    began the compensation) is kept by every retry of the step, and by a try run
    again after its worker was lost."""
    key = f"{instance_id}:{state}:{entered_seq}"
    return f"{key}:compensation" if kind == "compensation" else key


_current: ContextVar[TaskInfo | None] = ContextVar("orchestrator_task_info", default=None)


def task_info() -> TaskInfo:
    """The task or compensation running in this context; RuntimeError outside one."""
    info = _current.get()
    if info is None:
        raise RuntimeError(
            "task_info() is only available inside a running task or compensation "
            "(called by an orchestrator worker)"
        )
    return info


@contextmanager
def running(info: TaskInfo) -> Iterator[TaskInfo]:
    """Make `info` what task_info() returns for the duration of the block."""
    token = _current.set(info)
    try:
        yield info
    finally:
        _current.reset(token)

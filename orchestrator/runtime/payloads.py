"""The payloads of the jobs the applier gives the workers: their types, their check on
arrival, and their seal.

Why: anyone who can write to Redis can write an RQ job, so a worker trusts no job.
Before it imports or calls anything, it reads the payload through these types (a
missing, unknown or mistyped field refuses the job; see orchestrator.runtime.guard for what
is checked next), and, when the deployment has a job key, checks the job's seal: an
HMAC over the job's id and its serialized data, written by the dispatcher into the
job's meta (as Celery signs its messages). Write access to the queues alone then
cannot order a task.

The shapes, one per entry point (orchestrator.runtime.dispatch.ENTRY_POINTS):
  run_task            TaskPayload
  run_tasks           {"items": [TaskPayload, ...]}           1..TASKS_PER_JOB items
  send_notification   NotificationPayload
  send_notifications  {"items": [NotificationPayload, ...]}   1..NOTIFICATIONS_PER_JOB
"""

from __future__ import annotations

import hashlib
import hmac
from typing import (
    Any,
    Literal,
    NotRequired,  # pydantic reads these on Python < 3.12
    TypeVar,
)

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

T = TypeVar("T")
MAX_ITEMS = 50  # a packed job carries at most this many (orchestrator.runtime.dispatch)


@with_config(ConfigDict(extra="forbid", strict=True))
class TaskPayload(TypedDict):
    """One try of a task or a compensation, as orchestrator.runtime.jobs.run_task reads it."""

    instance: str
    workflow: str
    version: int
    inbox: str
    task: str
    kind: Literal["task", "compensation"]
    state: str
    attempt: int
    entered_seq: int
    context: dict[str, Any]
    job: str
    alive: str
    timeout: int


@with_config(ConfigDict(extra="forbid", strict=True))
class NotificationPayload(TypedDict):
    """One notification, as orchestrator.runtime.jobs.send_notification reads it. `instance`,
    `workflow` and `version` are None for a send without an instance (`notify send`)."""

    instance: str | None
    workflow: NotRequired[str | None]
    version: NotRequired[int | None]
    inbox: str
    channel: str
    to: str | None
    template: str
    templates: str | None
    urgent: bool
    context: dict[str, Any]
    key: str
    kind: Literal["notification"]
    partition: int
    namespace: str
    partitions: int
    alive: NotRequired[str]
    attempt: NotRequired[int]
    lost: NotRequired[
        int
    ]  # runs lost in a row so far (orchestrator.runtime.watchdog.MAX_LOST_RUNS)


class BadPayload(ValueError):
    """A job's payload does not have its entry point's shape; the message says where."""


_TASK = TypeAdapter(TaskPayload)
_NOTIFICATION = TypeAdapter(NotificationPayload)
_TASK_ITEMS = TypeAdapter(list[TaskPayload])
_NOTIFICATION_ITEMS = TypeAdapter(list[NotificationPayload])


def task(data: object) -> TaskPayload:
    return _validate(_TASK, data)


def notification(data: object) -> NotificationPayload:
    return _validate(_NOTIFICATION, data)


def task_items(data: object) -> list[TaskPayload]:
    return _validate(_TASK_ITEMS, _items(data), "items.")


def notification_items(data: object) -> list[NotificationPayload]:
    return _validate(_NOTIFICATION_ITEMS, _items(data), "items.")


def _items(data: object) -> list[Any]:
    if not isinstance(data, dict) or set(data) != {"items"}:
        raise BadPayload("a packed job's payload is {'items': [...]} and nothing else")
    items = data["items"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise BadPayload(f"a packed job carries 1 to {MAX_ITEMS} items in a list")
    return items


def _validate(adapter: TypeAdapter[T], data: object, prefix: str = "") -> T:
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = prefix + ".".join(str(part) for part in first["loc"]) or "payload"
        raise BadPayload(f"{where}: {first['msg']} ({exc.error_count()} problem(s))") from None


def seal(key: bytes, job_id: str, data: bytes) -> str:
    """The HMAC-SHA256 of a job's id and serialized data (RQ's `job.data`)."""
    mac = hmac.new(key, job_id.encode("utf-8", "surrogatepass"), hashlib.sha256)
    mac.update(b"\0")
    mac.update(data)
    return mac.hexdigest()


def sealed_by(key: bytes, job_id: str, data: bytes, claimed: object) -> bool:
    return isinstance(claimed, str) and hmac.compare_digest(seal(key, job_id, data), claimed)

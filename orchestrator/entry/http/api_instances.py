"""The API's routes about instances: list, start, emit, read, cancel, retry, replay.

Thin over the Python client (orchestrator.entry.client), as the CLI is: the
same checks, the same messages. Input is judged whole before anything is
written: a malformed field is a 422 naming it, the engine's refusal a 4xx
with its message (orchestrator.entry.http.api_errors).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.core.failures import failure_text, last_failure
from orchestrator.core.instance import STATUSES, Instance
from orchestrator.entry.http.api_errors import ApiError, blame
from orchestrator.entry.http.auth import Operate, Read
from orchestrator.entry.http.door import TheDoor
from orchestrator.store.inbox import check_id
from orchestrator.store.instances import parse_cursor

router = APIRouter(tags=["instances"])
InstanceId = Annotated[str, Path(max_length=200, description="The instance's id.")]
MAX_PAGE = 500


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: str = Field(min_length=1, max_length=200, description="The workflow's name.")
    data: dict[str, Any] | None = Field(None, description="The input (a JSON object).")
    id: str | None = Field(None, max_length=200, description="The instance id (default: new).")


class EmitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(min_length=1, max_length=200, description="The event type.")
    data: dict[str, Any] | None = Field(None, description="The event's data (a JSON object).")
    instance_id: str | None = Field(None, max_length=200, description="The instance it is for.")
    key: str | None = Field(
        None, max_length=1000, description="Or the business key, NAME=VALUE, of the instance."
    )
    task: str | None = Field(
        None, max_length=200, description="For task.completed/task.failed: the task it answers."
    )
    id: str | None = Field(
        None, max_length=200, description="The event id; one applied already is not again."
    )


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=1000, description="Why; kept in the history.")


def row(instance: Instance) -> dict[str, Any]:
    """An instance as a listing shows it (no context: a page stays small)."""
    return {
        "id": instance.id,
        "workflow": instance.workflow,
        "version": instance.version,
        "state": instance.state,
        "status": instance.status,
        "correlation": instance.correlation,
        "reason": instance.reason,
        "created_at": instance.created_at,
        "updated_at": instance.updated_at,
    }


def key_of(value: str, field: str = "key") -> tuple[str, str]:
    name, sep, found = value.partition("=")
    if not sep or not name or not found:
        raise ApiError(400, f"{field} must look like NAME=VALUE, not {value[:100]!r}", field)
    return name, found


@router.get("/instances")
def list_instances(
    door: TheDoor,
    _: Read,
    workflow: Annotated[
        str | None, Query(max_length=200, description="Only this workflow.")
    ] = None,
    state: Annotated[str | None, Query(max_length=200, description="Only in this state.")] = None,
    status: Annotated[str | None, Query(description=f"Only: {', '.join(STATUSES)}.")] = None,
    key: Annotated[
        str | None, Query(max_length=1000, description="Business key NAME=VALUE.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=400, description="`next` of the last page.")
    ] = None,
) -> dict[str, Any]:
    """A page of instances, newest first; `next` is the cursor of the next page (null: none)."""
    if status is not None and status not in STATUSES:
        message = f"unknown status {status[:50]!r} (statuses: {', '.join(STATUSES)})"
        raise ApiError(400, message, "status")
    found_by = key_of(key) if key is not None else None
    if cursor:
        with blame("cursor"):
            parse_cursor(cursor)
    with blame(None, UnknownWorkflow="workflow"):
        page = door.client.page(
            workflow=workflow or None,
            state=state or None,
            status=status,
            key=found_by,
            limit=limit,
            cursor=cursor or None,
        )
    return {"instances": [row(i) for i in page.instances], "next": page.next}


@router.post("/instances", status_code=201)
def start(body: StartBody, door: TheDoor, _: Operate) -> dict[str, Any]:
    """Start an instance of a workflow."""
    if body.id is not None:
        with blame("id"):
            check_id(body.id, "instance id")
    with blame("data", UnknownWorkflow="workflow"):
        instance_id = door.client.start(body.workflow, body.data, instance_id=body.id)
    return {"instance_id": instance_id, "workflow": body.workflow}


@router.post("/events", status_code=202)
def emit(body: EmitBody, door: TheDoor, _: Operate) -> dict[str, Any]:
    """Append an event for an instance (by id or business key), or start one with it."""
    if body.instance_id and body.key:
        raise ApiError(400, "give either an instance id or a key, not both", "key")
    found_by = key_of(body.key) if body.key else None
    for field, value in (("instance_id", body.instance_id), ("id", body.id)):
        if value is not None:
            with blame(field):
                check_id(value, "event id" if field == "id" else "instance id")
    addressed = "key" if found_by else "instance_id"
    with blame("data", UnknownEventType="type", UnknownInstance=addressed):
        emitted = door.client.emit(
            body.type,
            body.data,
            instance_id=body.instance_id,
            key=found_by,
            task=body.task,
            event_id=body.id,
        )
    return {
        "event_id": emitted.event_id or None,
        "instance_id": emitted.instance_id or None,
        "started": emitted.started,
        "note": emitted.note or None,
    }


@router.get("/instances/{instance_id}")
def status(instance_id: InstanceId, door: TheDoor, _: Read) -> dict[str, Any]:
    """Where the instance stands: status, state, data, its pending compensations, parked
    events, armed timers, children and parent, and its last failure."""
    client = door.client
    with blame("instance_id"):
        instance = client.status(instance_id)
        failed = last_failure(client.history(instance_id))
    error = None
    if failed is not None:
        data = failed["event"]["data"]
        error = {
            "text": failure_text(data),
            "at": failed["event"].get("at"),
            "seq": failed["seq"],
            "state": data.get("state"),
            "attempt": data.get("attempt"),
            "error_type": data.get("error_type"),
            "message": data.get("message"),
            "traceback": data.get("traceback"),
        }
    return {
        **instance.summary(),
        "finished": instance.finished,
        "halted": instance.halted,
        "attempt": instance.attempt,
        "compensating_to": instance.compensating_to,
        "parked": [{"id": e.id, "type": e.type, "at": e.at} for e in instance.parked],
        "timers": client.timers(instance),
        "error": error,
    }


@router.get("/instances/{instance_id}/history")
def history(instance_id: InstanceId, door: TheDoor, _: Read) -> dict[str, Any]:
    """Every event applied to the instance, oldest first, with what it did."""
    with blame("instance_id"):
        return {"instance_id": instance_id, "history": door.client.history(instance_id)}


@router.get("/instances/{instance_id}/notifications")
def notifications(instance_id: InstanceId, door: TheDoor, _: Read) -> dict[str, Any]:
    """The instance's notifications, oldest first, each with its delivery status."""
    with blame("instance_id"):
        found = door.client.notifications(instance_id)
    return {"instance_id": instance_id, "notifications": found}


@router.post("/instances/{instance_id}/cancel", status_code=202)
def cancel(
    instance_id: InstanceId,
    door: TheDoor,
    _: Operate,
    body: Annotated[CancelBody | None, Body()] = None,
) -> dict[str, Any]:
    """Cancel the instance: undo its finished steps, then end it in its cancel state."""
    with blame("instance_id"):
        event_id = door.client.cancel(instance_id, body.reason if body else None)
    return {"instance_id": instance_id, "event_id": event_id}


@router.post("/instances/{instance_id}/retry", status_code=202)
def retry(instance_id: InstanceId, door: TheDoor, _: Operate) -> dict[str, Any]:
    """Resume a failed instance: run again the compensation or task that failed."""
    with blame("instance_id"):
        event_id = door.client.retry(instance_id)
    return {"instance_id": instance_id, "event_id": event_id}


@router.post("/instances/{instance_id}/replay")
def replay(instance_id: InstanceId, door: TheDoor, _: Read) -> dict[str, Any]:
    """Rebuild the instance from its history and compare it with the stored one (no write)."""
    with blame("instance_id"):
        return door.client.replay(instance_id).summary()

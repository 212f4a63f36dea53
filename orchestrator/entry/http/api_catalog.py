"""The API's routes about what is defined: workflows (with their graphs) and recipients.

A workflow's graph comes as JSON a browser can draw: `nodes` (each state:
initial, final, its outcome, the task it runs, what undoes it, its timeout,
the branches of a parallel or map state) and `edges` (each transition: from,
to, the event, its guard, whether it compensates), the same reading of the
definition as `orchestrator graph` (orchestrator.core.graph), and that
command's Mermaid text too. Recipients are shown as `recipients show` shows
them: push keys never, URL passwords masked.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from orchestrator.core.graph import fan_lines, mermaid
from orchestrator.core.spec import ChildSpec, Definition, StateSpec, TaskSpec
from orchestrator.entry.http.api_errors import ApiError, blame
from orchestrator.entry.http.auth import Read
from orchestrator.entry.http.door import Door, TheDoor
from orchestrator.entry.notifications import recipient_view
from orchestrator.runtime.notify.recipients import Recipients

router = APIRouter()
MAX_PAGE = 500


def summary(door: Door, definition: Definition) -> dict[str, Any]:
    return {
        "name": definition.name,
        "version": definition.version,
        "versions": door.app.registry.versions(definition.name),
        "states": list(definition.states),
        "initial": definition.initial,
        "starts_on": sorted(definition.starts_on),
        "correlate_by": definition.correlate_by,
        "description": definition.description,
    }


def _task(task: TaskSpec | None) -> str | None:
    if task is None:
        return None
    if isinstance(task, ChildSpec):
        return f"child {task.workflow}"
    return task.path


def _node(state: StateSpec) -> dict[str, Any]:
    return {
        "id": state.name,
        "initial": state.initial,
        "final": state.final,
        "outcome": state.outcome,
        "task": _task(state.task),
        "compensation": _task(state.compensation),
        "timeout": state.timeout,
        "timeout_at": state.timeout_at,
        "timeout_event": state.timeout_event if state.timeout or state.timeout_at else None,
        "fan": fan_lines(state),
        "notify": [{"channel": n.channel, "template": n.template} for n in state.notify],
    }


def graph(definition: Definition) -> dict[str, Any]:
    """The state machine as nodes and edges (a transition from any state: one edge each)."""
    edges: list[dict[str, Any]] = []
    for row in definition.transitions:
        sources = (
            sorted(row.sources)
            if row.sources is not None
            else [name for name, state in definition.states.items() if not state.final]
        )
        for source in sources:
            edges.append(
                {
                    "source": source,
                    "target": row.target,
                    "event": row.event,
                    "guard": getattr(row.guard, "__name__", "guard") if row.guard else None,
                    "errors": sorted(row.errors) if row.errors is not None else None,
                    "compensate": row.compensate,
                    "internal": row.internal,
                }
            )
    return {"nodes": [_node(s) for s in definition.states.values()], "edges": edges}


@router.get("/workflows", tags=["workflows"])
def workflows(door: TheDoor, _: Read) -> dict[str, Any]:
    """The workflows this server loaded, newest version of each, with every version known."""
    return {"workflows": [summary(door, d) for d in door.app.registry.latest()]}


@router.get("/workflows/{name}", tags=["workflows"])
def workflow(
    name: Annotated[str, Path(max_length=200, description="The workflow's name.")],
    door: TheDoor,
    _: Read,
    version: Annotated[int | None, Query(ge=1, description="A version (default: newest).")] = None,
) -> dict[str, Any]:
    """A workflow with its graph: `nodes` and `edges`, and the graph as Mermaid text."""
    with blame("version", UnknownWorkflow="name"):
        definition = door.app.registry.get(name, version)
    return {**summary(door, definition), "graph": graph(definition), "mermaid": mermaid(definition)}


@router.get("/recipients", tags=["recipients"])
def recipients(
    door: TheDoor,
    _: Read,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="About this many.")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=20, description="`next` of the last page.")
    ] = None,
) -> dict[str, Any]:
    """A page of recipients (in no order: Redis' SSCAN over the set of ids); `next` goes on."""
    if cursor is not None and (not cursor.isascii() or not cursor.isdigit()):
        raise ApiError(400, "cursor must be the `next` of the page before", "cursor")
    client, keys = door.app.redis, door.app.keys
    position, members = client.sscan(keys.recipients, int(cursor or 0), count=limit)
    ids = sorted(m.decode(errors="replace") if isinstance(m, bytes) else m for m in members)
    pipe = client.pipeline(transaction=False)
    for recipient_id in ids:
        pipe.hget(keys.recipient(recipient_id), "data")
    found = (Recipients.parse(raw) for raw in pipe.execute())
    views = [recipient_view(r) for r in found if r is not None]
    return {"recipients": views, "next": str(position) if position else None}


@router.get("/recipients/{recipient_id}", tags=["recipients"])
def recipient(
    recipient_id: Annotated[str, Path(max_length=200, description="The recipient's id.")],
    door: TheDoor,
    _: Read,
) -> dict[str, Any]:
    """A recipient: addresses (masked), push endpoints, opt-outs, quiet hours, zone, locale."""
    with blame("recipient_id"):
        found = Recipients(door.app.redis, door.app.keys).require(recipient_id)
    return recipient_view(found)

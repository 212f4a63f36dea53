"""The chaos workload: workflows whose every task leaves a trace outside the engine.

`chaos_order` has six states: four task steps (reserve, charge, pack, ship),
then `done` or `failed`. Entering `reserve` emails an order confirmation (to
`contact`, `REF+orders@example.com`, which the misbehaving SMTP server of
the providers scenario leaves alone), entering `pack` emails a receipt,
entering `ship` texts the customer: three notifications an order. An
instance started with `"fail": true` (a tenth of them in the harness) fails
at `ship`, after its retries, and the engine undoes the three finished steps
newest first: unpack, refund, release.

`chaos_self_kill` prepares (undone by `stand_down`), then runs a task that
SIGKILLs its own work-horse on every try: the engine must give up after the
configured tries and compensate.

`chaos_saga` is the bundled `order`'s shape (the backlog scenario's): reserve
(released on failure), charge (refunded on failure) with a `payment.timeout`
of PAYMENT_TIMEOUT seconds that fails the order and compensates, ship; no
notifications. A charge that completes after its timeout fired has charged
the card all the same: the sink shows it, whatever the engine makes of it.

Both publish events (issue #17): `chaos.order.<state>` and `chaos.saga.<state>` on
entering each state, `chaos.order.charged` when the row from charge to pack
fires, `chaos.order.noted` when a note is consumed (an internal row: no change
of state). The harness runs the workers with ORCHESTRATOR_PUBLISH_LIFECYCLE=1,
so the engine's own events are published beside them (started, transitioned,
compensated, completed/failed, the notification outcomes); the checker's
`published_*` checks (outbox.py) count every one against the histories.

Every call of every task appends one JSON line to the Redis list `chaos:sink`
(outside the engine's `orch:` keys) before it does its work: what the engine
asked for (instance, state, kind, try, state entry, the try's job id, read
from the RQ job's payload: its own, or its instance's item of a job carrying
several tasks), so a task run twice, or a refund paid twice, shows there
whatever the engine believes. A call whose work is done appends the same
line (stamped again) to `chaos:done` just before it returns: the ground
truth of what was charged and what was refunded. The
harness puts ORCHESTRATOR_WORKFLOWS=bench.chaos.workload in the workers'
environment; tasks reach the sink through the workers' REDIS_URL.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from typing import Any

import redis
from pydantic import BaseModel
from rq import get_current_job

from orchestrator import On, Publish, State, Task, Workflow
from orchestrator.core.definition import LOST_TRIES, Notify

SINK = "chaos:sink"
DONE = "chaos:done"  # one line per task call that returned: the effect is real
NOTE = "chaos.note"  # an external event the harness emits; consumed where the instance stands
STEP_TRIES = 5  # a step survives four lost tries in a row
UNDO_TRIES = 10  # a compensation must eventually succeed: more tries
SELF_KILL_ATTEMPTS = 3
# each try dies with its worker: lost tries are retried on their own budget, then the attempts
SELF_KILL_TRIES = SELF_KILL_ATTEMPTS + LOST_TRIES
PAYMENT_TIMEOUT = 3.0  # seconds, as the bundled `order`'s charging state
PAYMENT_TIMEOUT_EVENT = "payment.timeout"

_client: tuple[int, redis.Redis] | None = None


def _sink() -> redis.Redis:
    """One connection per process: a forked work-horse must not reuse its parent's socket.

    No read timeout (redis-py's default is 5 s): a line written while Redis is frozen is
    applied when it thaws, so a task that timed out on it would report a failure for work
    the sink shows done (a charge the engine is told failed). The sink waits instead, and
    its lines stay the truth of what returned."""
    global _client
    if _client is None or _client[0] != os.getpid():
        url = os.environ["REDIS_URL"]
        _client = (os.getpid(), redis.Redis.from_url(url, socket_timeout=None))
    return _client[1]


def record(ctx: dict[str, Any], step: str, kind: str) -> dict[str, Any]:
    """Append this call to the sink; what the engine asked comes from the RQ job itself."""
    job = get_current_job()
    payload: dict[str, Any] = dict(job.kwargs.get("payload") or {}) if job is not None else {}
    if "items" in payload:  # a job carrying several tasks: this call is its instance's one
        mine = [item for item in payload["items"] if item.get("instance") == ctx["ref"]]
        payload = dict(mine[0]) if len(mine) == 1 else {}
    line = {
        "i": ctx["ref"],
        "step": payload.get("state", step),
        "kind": payload.get("kind", kind),
        "task": payload.get("task", ""),
        "job": payload.get("job", ""),
        "attempt": payload.get("attempt", 0),
        "entered_seq": payload.get("entered_seq", 0),
        "pid": os.getpid(),
        "at": time.time(),
    }
    _sink().rpush(SINK, json.dumps(line, separators=(",", ":")))
    return line


def finish(line: dict[str, Any]) -> None:
    """Append this call, as `record` wrote it, to the list of calls that returned: written
    when the task's work is done, just before it returns (a card charged, a parcel
    shipped), whatever the engine makes of its answer later."""
    done = {**line, "at": time.time()}
    _sink().rpush(DONE, json.dumps(done, separators=(",", ":")))


def step(fn: Any) -> Task:
    return Task(fn, retries=STEP_TRIES - 1, backoff=0.2, max_backoff=2.0, timeout=30.0)


def undo(fn: Any) -> Task:
    return Task(fn, retries=UNDO_TRIES - 1, backoff=0.2, max_backoff=2.0, timeout=30.0)


def _work(ctx: dict[str, Any], name: str) -> None:
    """Take some time, so that kills land while tasks run."""
    seconds = float(ctx.get(name, 0.1))
    if seconds > 0:
        time.sleep(random.uniform(0.5, 1.5) * seconds)


# -- published events ---------------------------------------------------------------


class Stage(BaseModel):
    """A state entered (a `chaos.order.*` or `chaos.saga.*` event): which order."""

    ref: str


class Charged(BaseModel):
    """An order's card charged (the row from charge to pack fired)."""

    ref: str
    charge: str | None = None


class Noted(BaseModel):
    """An order consumed a `chaos.note` where it stood."""

    ref: str


def stages(workflow: str, states: tuple[str, ...]) -> list[Publish]:
    """One business event per state, `chaos.<workflow>.<state>`, published on entering it."""
    return [Publish(f"chaos.{workflow}.{name}", Stage, data=["ref"]) for name in states]


ORDER_STATES = ("reserve", "charge", "pack", "ship", "done", "failed")
SAGA_STATES = ("reserve", "charge", "ship", "done", "failed")


def entered(workflow: str, state: str) -> list[str]:
    return [f"chaos.{workflow}.{state}"]


# -- chaos_order ------------------------------------------------------------------


def reserve_stock(ctx: dict[str, Any]) -> dict[str, Any]:
    line = record(ctx, "reserve", "task")
    _work(ctx, "work")
    finish(line)
    return {"reservation": f"R-{ctx['ref']}"}


def charge_card(ctx: dict[str, Any]) -> dict[str, Any]:
    line = record(ctx, "charge", "task")
    _work(ctx, "work")
    finish(line)
    return {"charge": f"CH-{ctx['ref']}"}


def pack_parcel(ctx: dict[str, Any]) -> dict[str, Any]:
    line = record(ctx, "pack", "task")
    _work(ctx, "work")
    finish(line)
    return {"parcel": f"P-{ctx['ref']}"}


def ship_parcel(ctx: dict[str, Any]) -> dict[str, Any]:
    line = record(ctx, "ship", "task")
    _work(ctx, "work")
    if ctx.get("fail"):
        raise RuntimeError("the carrier refused the parcel")
    finish(line)
    return {"tracking": f"T-{ctx['ref']}"}


def release_stock(ctx: dict[str, Any]) -> None:
    line = record(ctx, "reserve", "compensation")
    _work(ctx, "undo_work")
    finish(line)


def refund_card(ctx: dict[str, Any]) -> None:
    line = record(ctx, "charge", "compensation")
    _work(ctx, "undo_work")
    finish(line)


def unpack_parcel(ctx: dict[str, Any]) -> None:
    line = record(ctx, "pack", "compensation")
    _work(ctx, "undo_work")
    finish(line)


class ChaosOrder(Workflow):
    """Four steps, two emails and an SMS; a tenth fail at the last step and compensate.
    Publishes `chaos.order.<state>` on entering each state, `chaos.order.charged` when the
    charge completes (a row's event) and `chaos.order.noted` when a note is consumed (an
    internal row's: no change of state)."""

    name = "chaos_order"
    version = 1
    publishes = [
        *stages("order", ORDER_STATES),
        Publish("chaos.order.charged", Charged, data=["ref", "charge"]),
        Publish("chaos.order.noted", Noted, data=["ref"]),
    ]

    reserve = State(
        initial=True,
        task=step(reserve_stock),
        compensation=undo(release_stock),
        notify=[Notify("email", "confirm", to="contact")],
        publish=entered("order", "reserve"),
    )
    charge = State(
        task=step(charge_card),
        compensation=undo(refund_card),
        publish=entered("order", "charge"),
    )
    pack = State(
        task=step(pack_parcel),
        compensation=undo(unpack_parcel),
        notify=[Notify("email", "receipt", to="email")],
        publish=entered("order", "pack"),
    )
    ship = State(
        task=step(ship_parcel),
        notify=[Notify("sms", "shipping", to="phone")],
        publish=entered("order", "ship"),
    )
    done = State(final=True, publish=entered("order", "done"))
    failed = State(final=True, outcome="failed", publish=entered("order", "failed"))

    transitions = [
        On("task.completed", source=reserve, target=charge),
        On("task.failed", source=reserve, target=failed),
        On("task.completed", source=charge, target=pack, publish=["chaos.order.charged"]),
        On("task.failed", source=charge, target=failed, compensate=True),
        On("task.completed", source=pack, target=ship),
        On("task.failed", source=pack, target=failed, compensate=True),
        On("task.completed", source=ship, target=done),
        On("task.failed", source=ship, target=failed, compensate=True),
        *(
            On(NOTE, source=s, target=s, internal=True, publish=["chaos.order.noted"])
            for s in (reserve, charge, pack, ship)
        ),
    ]


# -- chaos_self_kill -------------------------------------------------------------


def get_ready(ctx: dict[str, Any]) -> dict[str, Any]:
    line = record(ctx, "prepare", "task")
    _work(ctx, "work")
    finish(line)
    return {"prepared": True}


def stand_down(ctx: dict[str, Any]) -> None:
    line = record(ctx, "prepare", "compensation")
    _work(ctx, "undo_work")
    finish(line)


def kill_own_process(ctx: dict[str, Any]) -> None:
    """SIGKILL the work-horse running this: no answer, no RQ callback, on every try."""
    record(ctx, "explode", "task")
    os.kill(os.getpid(), signal.SIGKILL)


class ChaosSelfKill(Workflow):
    """A task that kills its own process: tried SELF_KILL_TRIES times (its lost tries, then
    its attempts), then compensated."""

    name = "chaos_self_kill"
    version = 1

    prepare = State(initial=True, task=step(get_ready), compensation=undo(stand_down))
    explode = State(
        task=Task(
            kill_own_process,
            retries=SELF_KILL_ATTEMPTS - 1,
            backoff=0.2,
            max_backoff=1.0,
            timeout=30,
        )
    )
    done = State(final=True)
    failed = State(final=True, outcome="failed")

    transitions = [
        On("task.completed", source=prepare, target=explode),
        On("task.failed", source=prepare, target=failed),
        On("task.completed", source=explode, target=done),
        On("task.failed", source=explode, target=failed, compensate=True),
    ]


# -- chaos_saga ------------------------------------------------------------------


def saga_reserve(ctx: dict[str, Any]) -> dict[str, Any]:
    line = record(ctx, "reserve", "task")
    _work(ctx, "work")
    finish(line)
    return {"reservation": f"R-{ctx['ref']}"}


def saga_release(ctx: dict[str, Any]) -> None:
    line = record(ctx, "reserve", "compensation")
    _work(ctx, "undo_work")
    finish(line)


def saga_charge(ctx: dict[str, Any]) -> dict[str, Any]:
    line = record(ctx, "charge", "task")
    _work(ctx, "work")
    finish(line)  # the card is charged, whatever the engine makes of the answer
    return {"charge": f"CH-{ctx['ref']}"}


def saga_refund(ctx: dict[str, Any]) -> None:
    line = record(ctx, "charge", "compensation")
    _work(ctx, "undo_work")
    finish(line)


def saga_ship(ctx: dict[str, Any]) -> dict[str, Any]:
    line = record(ctx, "ship", "task")
    _work(ctx, "work")
    if ctx.get("fail"):
        raise RuntimeError("no carrier delivers there")
    finish(line)
    return {"tracking": f"T-{ctx['ref']}"}


class ChaosSaga(Workflow):
    """The bundled `order`'s shape: reserve (released on failure), charge (refunded on
    failure) with a `payment.timeout` of PAYMENT_TIMEOUT seconds, ship; no notifications.
    Publishes `chaos.saga.<state>` on entering each state."""

    name = "chaos_saga"
    version = 1
    publishes = stages("saga", SAGA_STATES)

    reserve = State(
        initial=True,
        task=Task(saga_reserve, retries=2, backoff=0.2, timeout=30.0),
        compensation=undo(saga_release),
        publish=entered("saga", "reserve"),
    )
    charge = State(
        task=Task(saga_charge, retries=1, backoff=0.2, timeout=60.0),
        compensation=undo(saga_refund),
        timeout=PAYMENT_TIMEOUT,
        timeout_event=PAYMENT_TIMEOUT_EVENT,
        publish=entered("saga", "charge"),
    )
    ship = State(
        task=Task(saga_ship, retries=1, backoff=0.2, timeout=30.0),
        publish=entered("saga", "ship"),
    )
    done = State(final=True, publish=entered("saga", "done"))
    failed = State(final=True, outcome="failed", publish=entered("saga", "failed"))

    transitions = [
        On("task.completed", source=reserve, target=charge),
        On("task.failed", source=reserve, target=failed),
        On("task.completed", source=charge, target=ship),
        On("task.failed", source=charge, target=failed, compensate=True),
        On(PAYMENT_TIMEOUT_EVENT, source=charge, target=failed, compensate=True),
        On("task.completed", source=ship, target=done),
        On("task.failed", source=ship, target=failed, compensate=True),
    ]

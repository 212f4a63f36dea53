"""saga-backlog: Redis paused under a backlog; charges that return after their payment timeout.

Issue #12, point 1: a task that completes after its state was left is never
undone. The workload is `chaos_saga` (workload.py), the bundled `order`'s
shape: reserve (released on failure), charge (refunded on failure) with a
`payment.timeout` of PAYMENT_TIMEOUT seconds, ship; a twentieth fail at ship
and compensate the ordinary way. Thousands of orders are started as fast as
the client goes, far more than the four task workers keep up with, so a
backlog builds in the task queue; then the redis-server is frozen (SIGSTOP)
for PAUSE seconds and thawed (SIGCONT). Every client waits (no socket
timeout): nothing is lost, but the wall clock runs on, so once Redis is back
every payment timeout armed before the pause is due at once, while the
charges it guards still wait in the queue, and the ones entered after it
wait longer than the timeout behind the backlog. Each such order is failed
and compensated while its charge is still to run; the charge then runs and
returns: the card is charged.

The checker's `unrefunded` judges from the sink's calls that returned
(`chaos:done`), not from the history: every order that compensated must have
each step that completed there, the late charge included, undone by exactly
one compensation run. With the engine as it was when this scenario was
written, the late charge is recorded `ignored` and never refunded: the
scenario fails with many orders charged and not refunded. Once a compensation
run waits for the tries in flight and a late completion pushes its
compensation, it must show 0.

Pass: the common figures (every order final, none charged and not refunded,
no step undone twice, the history's compensations newest first), no worker
exit nobody caused, no traceback; and the race was run: at least one charge
answered after its order's payment timeout was applied.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from rq import Queue

from bench.chaos.cluster import Cluster, Shape, cluster
from bench.chaos.model import Report, Snapshot, is_final
from bench.chaos.runner import Batch, Chaos, Run, say
from bench.chaos.scenarios import Outcome, Row, _folder, common_rows, fault_row, health_row
from bench.chaos.workload import PAYMENT_TIMEOUT, PAYMENT_TIMEOUT_EVENT
from orchestrator.runtime.dispatch import TASK_QUEUE

SIZES = {  # orders, started over seconds, Redis paused seconds, deadline to go quiet
    "full": (4000, 12.0, 20.0, 900.0),
    "quick": (600, 3.0, 8.0, 300.0),
    "ci": (150, 1.0, 5.0, 120.0),
}
PREFIX = "sb"
BACKLOG_WITHIN = 30.0  # seconds after the last start to wait for a fifth of the orders in charge


class BacklogRun(Run):
    def backlog(self, charging: int, within: float) -> dict[str, int]:
        """Wait until at least `charging` orders stand in `charge` (their charge queued or
        running, their payment timeout armed), `within` seconds at most; what is in flight."""
        end = time.monotonic() + within
        while True:
            flight = in_flight(self.cluster, self.ids)
            if flight["charge"] >= charging or time.monotonic() >= end:
                return flight
            time.sleep(0.1)

    def freeze(self, seconds: float, flight: dict[str, int]) -> None:
        """SIGSTOP the redis-server for `seconds`, then SIGCONT."""
        pid = self.cluster.redis.pid
        self.cluster.faults.write(
            {"at": time.time(), "action": "redis-pause", "seconds": seconds, "roles": ["redis"]}
        )
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        say(
            f"  Redis frozen {seconds:.0f}s with {flight['orders']} orders in flight "
            f"({flight['charge']} in charge), {flight['tries']} task tries outstanding "
            f"({flight['queued']} jobs queued)"
        )


def in_flight(c: Cluster, ids: list[str]) -> dict[str, int]:
    keys, client = c.app.keys, c.app.redis
    pipe = client.pipeline(transaction=False)
    for instance_id in ids:
        pipe.hmget(keys.instance(instance_id), "status", "state", "compensating_to")
    orders = charging = 0
    for status, state, compensating_to in pipe.execute():
        fields = {"status": (status or b"").decode(), "compensating_to": compensating_to or ""}
        if not is_final(fields):
            orders += 1
            charging += (state or b"") == b"charge"
    tries = sum(int(client.hlen(keys.outstanding_jobs(p))) for p in range(keys.partitions))
    queued = int(client.llen(Queue(TASK_QUEUE, connection=client).key))
    return {"orders": orders, "charge": charging, "tries": tries, "queued": queued}


def late_charges(snapshot: Snapshot) -> tuple[int, int]:
    """(orders whose payment timeout was applied, orders whose charge answered after it)."""
    timed_out = late = 0
    for history in snapshot.histories.values():
        fired = next(
            (
                e["seq"]
                for e in history
                if e["event"]["type"] == PAYMENT_TIMEOUT_EVENT and e["outcome"] != "ignored"
            ),
            None,
        )
        if fired is None:
            continue
        timed_out += 1
        late += any(
            e["seq"] > fired
            and e["event"]["type"] == "task.completed"
            and (e["event"].get("data") or {}).get("state") == "charge"
            for e in history
        )
    return timed_out, late


def charged(snapshot: Snapshot) -> int:
    """Orders whose charge returned at the sink (at least once)."""
    return len(
        {c["i"] for c in snapshot.completions if c["step"] == "charge" and c["kind"] == "task"}
    )


def saga_rows(report: Report, snapshot: Snapshot, count: int) -> list[Row]:
    f = report.figure
    timed_out, late = late_charges(snapshot)
    outcomes = [fields.get("state") for fields in snapshot.instances.values()]
    unrefunded = f("not_undone:charge")
    return [
        Row(
            "orders charged and not refunded",
            f"{unrefunded:.0f} of {charged(snapshot)} charged",
            "0",
            unrefunded == 0 and f("undone_twice:charge") == 0,
        ),
        Row(
            "orders compensated (info)",
            f"{f('compensating_instances'):.0f} of {count} ({timed_out} after a payment timeout); "
            f"{outcomes.count('done')} shipped",
            "-",
            True,
        ),
        Row(
            "charges answered after their payment timeout",
            f"{late} of {timed_out} timed out",
            ">= 1 (the race was run)",
            late >= 1,
        ),
    ]


def saga_backlog(size: str) -> Outcome:
    count, over, pause, deadline = SIZES[size]
    folder, began = _folder("saga-backlog"), time.monotonic()
    flight: dict[str, Any] = {}
    with cluster(folder, Shape()) as c:
        run = BacklogRun(c, seed=12)
        batch = Batch(
            PREFIX, count, over, workflow="chaos_saga", fail_every=20, work=0.01, undo_work=0.01
        )
        run.drive([batch], Chaos(every=None, lasts=0.0))
        flight = run.backlog(count // 5, BACKLOG_WITHIN)
        run.freeze(pause, flight)
        run.settle(deadline)
        snapshot, report = run.collect()
    rows = [
        *common_rows(report, budget=False),
        health_row(run),
        *saga_rows(report, snapshot, count),
        Row(
            "Redis frozen (info)",
            f"{pause:.0f}s (payment timeout {PAYMENT_TIMEOUT:.0f}s) with {flight['orders']} "
            f"orders in flight ({flight['charge']} in charge), {flight['tries']} task tries "
            f"outstanding ({flight['queued']} jobs queued)",
            "-",
            True,
        ),
        fault_row(report, snapshot),
    ]
    return Outcome("saga-backlog", rows, report, time.monotonic() - began, folder)

"""What the send threads share: one notification being sent (Send), and the parts that
send a job's items (Parts), built once a job rather than once an item."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future

import redis

from orchestrator.runtime.context import WorkerContext
from orchestrator.runtime.heartbeat import Beating
from orchestrator.runtime.notify.commits import Commits
from orchestrator.runtime.notify.delivery import Deliverer, Render
from orchestrator.runtime.notify.later import Later
from orchestrator.runtime.notify.ledger import Ask, Claim
from orchestrator.runtime.outstanding import Outstanding
from orchestrator.runtime.payloads import NotificationPayload, alive_of, keys_of

# Held by a job handing sends over, or by a send marking itself committing: a send is
# never half handed over (orchestrator.runtime.notify.handover)
HANDING = threading.Lock()


class Send:
    """One notification being sent as `job_id` (its job's id, or its key inside a packed
    job), and who answers for it: its job, or the process it was handed over to."""

    def __init__(self, payload: NotificationPayload, job_id: str, heartbeat: Beating) -> None:
        self.payload, self.job_id = payload, job_id
        self.alive = alive_of(payload, job_id)
        self.heartbeat = heartbeat  # who beats its heartbeat now
        self.future: Future[None] | None = None
        self.committing = False  # its answer is being committed: no handing over now
        self.handed: str | None = None  # its safety net's member in Later, once handed over

    @property
    def started(self) -> Future[None]:
        assert self.future is not None, "a send waited for is submitted first"
        return self.future


class Parts:
    """What sends a job's items (each registers its Lua scripts): they keep no state
    between calls, so the send threads share them."""

    def __init__(self, connection: redis.Redis, context: WorkerContext) -> None:
        self.connection, self.context = connection, context
        self.commits = Commits(connection)
        self._made: dict[tuple[str, int, Render], tuple[Deliverer, Later, Outstanding]] = {}
        self._lock = threading.Lock()

    def claim(self, sends: Sequence[Send], render: Render) -> list[Claim | None]:
        """Each send's ledger claim, as its delivery would make it, all in one round trip;
        None for one not made here (its delivery makes it, and meets any error there)."""
        claims: list[Claim | None] = [None] * len(sends)
        asks: dict[Deliverer, list[tuple[int, Ask]]] = {}
        for index, send in enumerate(sends):
            try:
                deliverer = self.of(send.payload, render)[0]
                ask = deliverer.ask(send.payload, send.job_id, send.alive)
            except Exception:  # a malformed item: it fails on its own, in its thread
                continue
            asks.setdefault(deliverer, []).append((index, ask))
        for deliverer, pairs in asks.items():
            made = deliverer.ledger.claim_many([ask for _, ask in pairs])
            for (index, _), claim in zip(pairs, made, strict=True):
                claims[index] = claim
        return claims

    def of(
        self, payload: NotificationPayload, render: Render
    ) -> tuple[Deliverer, Later, Outstanding]:
        keys = keys_of(payload)
        key = (keys.namespace, keys.partitions, render)
        with self._lock:
            made = self._made.get(key)
            if made is None:
                client, context = self.connection, self.context
                made = self._made[key] = (
                    Deliverer(client, keys, context.channels, context.notifiers, render),
                    Later(client, keys),
                    Outstanding(client, keys),
                )
        return made

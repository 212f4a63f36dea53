"""Events applied per second by one Applier in this process, for no-op transitions.

Setup (not timed): start M `counter` instances through the client, apply
their start events, then append N `tick` events round-robin over the
instances, straight into the inbox partitions with pipelined XADDs in the
format `Inbox.append` writes. Timed: `applier.drain()` until every tick is
applied. The applier runs with the engine's defaults (8 partitions, all
leased by this one applier; batch size 200 per partition).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from bench.counting import counted_client
from bench.measure import Measurement, timed
from orchestrator.entry.bootstrap import bootstrap
from orchestrator.entry.connection import tune
from orchestrator.entry.settings import Settings
from orchestrator.runtime.applier import Applier
from orchestrator.store.inbox import Inbox
from orchestrator.store.keys import Keys

WORKFLOW_MODULE = "bench.workflows"
APPEND_CHUNK = 2000
T = TypeVar("T")

# Where one batch's wall time goes; "commit" is the rest of apply_batch: parsing
# the event JSON, WATCH, and MULTI/EXEC (command encoding, the round trip, replies).
PHASES = {
    "maintain": "leases.maintain (heartbeat, renewals)",
    "timers": "timers.fire_due (one EVALSHA)",
    "read": "_read: XREADGROUP and its reply",
    "load": "_load: lease GETs, HGETALL, SMISMEMBER; Instance.from_fields",
    "apply": "_apply_all: the pure transition function, history entries",
    "write": "_write: queueing the MULTI commands (no I/O)",
    "commit": "the rest of apply_batch: event JSON parsing, WATCH, EXEC",
}


class PhaseTimes:
    """Wall time per phase of Applier.tick, measured around whole calls (once per batch)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.batch = 0.0

    def wrap(self, name: str, func: Callable[..., T]) -> Callable[..., T]:
        def timed_call(*args: Any, **kwargs: Any) -> T:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                if name == "batch":
                    self.batch += elapsed
                else:
                    self.seconds[name] += elapsed

        return timed_call

    def instrument(self, applier: Applier) -> None:
        """Wrap the applier's steps on this one object; the engine's code is unchanged."""
        targets: list[tuple[str, object, str]] = [
            ("maintain", applier.leases, "maintain"),
            ("timers", applier.timers, "fire_due"),
            ("batch", applier, "apply_batch"),
            ("read", applier.reader, "read"),
            ("load", applier.reader, "load"),
            ("apply", applier, "_apply_all"),
            ("write", applier.writer, "write"),
        ]
        for name, owner, attribute in targets:
            setattr(owner, attribute, self.wrap(name, getattr(owner, attribute)))

    def per_event_usec(self, events: int) -> dict[str, float]:
        inner = sum(self.seconds[n] for n in ("read", "load", "apply", "write"))
        seconds = {**self.seconds, "commit": max(0.0, self.batch - inner)}
        return {name: round(value * 1e6 / events, 2) for name, value in seconds.items()}


def measure_applier(
    url: str,
    *,
    events: int,
    instances: int,
    partitions: int = 8,
    batch_size: int = 200,
    profile_lines: int = 0,
) -> Measurement:
    """One run on an emptied database; with profile_lines, print a cProfile of the drain."""
    admin = redis.Redis.from_url(url)
    admin.flushdb()
    client, trips = counted_client(url)
    tune(client)  # the engine's own connection settings (orchestrator.entry.connection.connect)
    settings = Settings(
        redis_url=url,
        workflows=(WORKFLOW_MODULE,),
        partitions=partitions,
        data_dir=Path(tempfile.gettempdir()),  # unused: the URL is given
    )
    app = bootstrap(settings)
    app.redis = client  # the counting client, set before anything connects
    orchestrator = app.client
    ids = [orchestrator.start("counter") for _ in range(instances)]
    applier = app.applier(batch_size=batch_size)
    applier.leases.maintain(force=True)
    started = applier.drain()
    if started != instances:
        raise RuntimeError(f"applied {started} start events, expected {instances}")
    _append_ticks(client, app.keys, ids, events)

    result = Measurement("orchestrator")
    phases = PhaseTimes()
    phases.instrument(applier)
    profiler = cProfile.Profile() if profile_lines else None
    with timed(result, admin, trips):
        if profiler is not None:
            profiler.enable()
        applied = applier.drain()
        if profiler is not None:
            profiler.disable()
    applier.leases.release_all()
    result.items = applied

    seqs = _seqs(admin, app.keys, ids)
    if applied != events or sum(seqs) != events + instances:
        raise RuntimeError(
            f"applied {applied} of {events} ticks; instance seqs sum to {sum(seqs)}, "
            f"expected {events + instances}"
        )
    batches = result.stats.calls.get("exec", 0)
    result.extra = {
        "instances": instances,
        "partitions": partitions,
        "batch_size": batch_size,
        "batches": batches,
        "events_per_batch": round(applied / batches, 1) if batches else None,
        "phase_usec_per_event": phases.per_event_usec(applied),
    }
    if profiler is not None:
        _print_profile(profiler, profile_lines)
    client.close()
    admin.close()
    return result


def _append_ticks(client: redis.Redis, keys: Keys, ids: list[str], events: int) -> None:
    pipe = client.pipeline(transaction=False)
    for number in range(events):
        event = Inbox.event("tick", ids[number % len(ids)], {})
        pipe.xadd(keys.inbox(keys.partition_of(event.instance_id)), {"e": event.to_json()})
        if len(pipe) >= APPEND_CHUNK:
            pipe.execute()
    pipe.execute()


def _seqs(admin: redis.Redis, keys: Keys, ids: list[str]) -> list[int]:
    pipe = admin.pipeline(transaction=False)
    for instance_id in ids:
        pipe.hget(keys.instance(instance_id), "seq")
    return [int(raw or 0) for raw in pipe.execute()]


def _print_profile(profiler: cProfile.Profile, lines: int) -> None:
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats(order).print_stats(lines)
        print(f"\n-- applier.drain() profile, by {order} --")
        print(out.getvalue().strip())

"""The two workloads, the same code for every system.

Throughput: W workflows preloaded with the workers stopped; then the two
worker processes start; the clock starts when a worker first takes from the
backlog (seen by polling Redis every 2 ms, so worker start-up is not counted,
but reported) and stops at the last finish time any workflow recorded.
Over the same run, from the first take until the system has settled after
the last step (bench.flows.trips): the Redis round trips and commands of
all its processes, counted on the server, the driver's own left out, per
step (3 per workflow).

Latency, open loop, on a fresh server with fresh workers: once both worker
processes are up and WARM_UP workflows have gone through, one workflow is
submitted every 1/rate s for a fixed time,
whatever has finished, from one driver thread; a workflow's latency is its
recorded finish time minus the time.time() the driver read just before
submitting it. A client too slow for the rate submits late (the lag and the
rate reached are reported) and stops at 1.5 times the planned time. A backlog
still unfinished after the drain time is not waited for: those workflows
count with the time they had waited by then, so the percentiles are lower
bounds, and the report says how many.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.flows.base import System
from bench.flows.steps import DONE
from bench.flows.trips import Meter

POLL = 0.002  # s, watching for the first take
WAIT_POLL = 0.02  # s, watching for completion
SAMPLE_EVERY = 0.5  # s, progress samples kept for the report
SHOW_UNFINISHED = 5
WARM_UP = 4
STEPS = 3  # per workflow


class WorkersDied(RuntimeError):
    pass


@dataclass(frozen=True)
class Sizes:
    preloaded: int = 1000
    rates: tuple[tuple[int, float], ...] = ((50, 10.0), (500, 5.0))  # (per second, seconds)
    drain: float = 10.0  # s allowed after the last submission
    drain_preloaded: float = 60.0  # s allowed for the whole preloaded backlog


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def finished(system: System, ids: list[str]) -> dict[str, float]:
    values = system.redis.hmget(DONE, ids)
    return {wf: float(v) for wf, v in zip(ids, values, strict=True) if v is not None}


def wait_done(
    system: System, ids: list[str], deadline: float, progress: list[tuple[float, int]]
) -> dict[str, float]:
    """Finish times of the ids, once all have one or the deadline (monotonic) passes.

    `progress` gets (seconds since the call, workflows finished) every SAMPLE_EVERY.
    """
    begun = time.monotonic()
    base = int(system.redis.hlen(DONE)) - len(finished(system, ids))
    sampled = 0.0
    while True:
        count = int(system.redis.hlen(DONE)) - base
        now = time.monotonic()
        if now - begun >= sampled:
            progress.append((round(now - begun, 2), count))
            sampled += SAMPLE_EVERY
        if count >= len(ids):
            done = finished(system, ids)
            if len(done) == len(ids):
                return done
        if now > deadline:
            return finished(system, ids)
        if dead := system.workers.dead():
            raise WorkersDied("; ".join(dead))
        time.sleep(WAIT_POLL)


def _unfinished(system: System, ids: list[str], done: dict[str, float]) -> dict[str, str]:
    return {wf: system.trace(wf) for wf in [w for w in ids if w not in done][:SHOW_UNFINISHED]}


def throughput(system: System, sizes: Sizes) -> dict[str, Any]:
    ids = [f"tp-{i}" for i in range(sizes.preloaded)]
    began = time.perf_counter()
    system.preload(ids)
    preload_seconds = time.perf_counter() - began
    spawned = time.time()
    system.start_workers()
    deadline = time.monotonic() + 60
    while not system.taken():
        if time.monotonic() > deadline:
            raise WorkersDied(f"no worker took anything in 60 s: {system.workers.dead()}")
        if dead := system.workers.dead():
            raise WorkersDied("; ".join(dead))
        time.sleep(POLL)
    meter = Meter(system.redis, system.driver_count)
    meter.start()
    first_take = time.time()
    progress: list[tuple[float, int]] = []
    done = wait_done(system, ids, time.monotonic() + sizes.drain_preloaded, progress)
    if len(done) == len(ids):
        system.settle(10.0)  # the system's bookkeeping after the last step counts too
    counted = meter.stop(STEPS * len(done), time.time() - first_take)
    last = max(done.values(), default=first_take)
    seconds = last - first_take
    return {
        "workflows": len(ids),
        "finished": len(done),
        "preload_seconds": round(preload_seconds, 3),
        "startup_seconds": round(first_take - spawned, 3),
        "seconds": round(seconds, 3),
        "per_second": round(len(done) / seconds, 1) if seconds > 0 else None,
        "per_second_with_startup": round(len(done) / (last - spawned), 1),
        "unfinished": _unfinished(system, ids, done),
        "left": system.state(),
        "progress": progress,
        "redis": counted,
    }


def warm_up(system: System, timeout: float = 60.0) -> float:
    """Start the workers, wait until they are up and have run a few workflows; seconds taken."""
    began = time.monotonic()
    system.start_workers()
    while not system.ready():
        if time.monotonic() - began > timeout:
            raise WorkersDied(f"workers not up in {timeout:g} s: {system.workers.dead()}")
        if dead := system.workers.dead():
            raise WorkersDied("; ".join(dead))
        time.sleep(0.05)
    ids = [f"warm-{i}" for i in range(WARM_UP)]
    for wf in ids:
        system.submit(wf)
    done = wait_done(system, ids, began + timeout, [])
    if len(done) < len(ids):
        raise WorkersDied(f"{len(ids) - len(done)} warm-up workflows unfinished in {timeout:g} s")
    return round(time.monotonic() - began, 3)


def latency(system: System, rate: int, duration: float, drain: float) -> dict[str, Any]:
    planned = max(1, round(rate * duration))
    ids: list[str] = []
    starts: dict[str, float] = {}
    lag = 0.0
    origin = time.perf_counter()
    last_start = origin
    for index in range(planned):
        due = origin + index / rate
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        else:
            lag = max(lag, now - due)
            if now - origin > 1.5 * duration:
                break  # the client cannot keep the rate: stop at 1.5 times the planned time
        wf = f"lat{rate}-{index}"
        last_start = time.perf_counter()
        starts[wf] = time.time()
        system.submit(wf)
        ids.append(wf)
    progress: list[tuple[float, int]] = []
    done = wait_done(system, ids, time.monotonic() + drain, progress)
    given_up = time.time()
    waits = [(done.get(wf, given_up) - starts[wf]) * 1000 for wf in ids]
    span = last_start - origin
    return {
        "rate": rate,
        "planned": planned,
        "workflows": len(ids),
        "finished": len(done),
        "submit_seconds": round(span, 3),
        "achieved_rate": round((len(ids) - 1) / span, 1) if span > 0 else None,
        "max_driver_lag_ms": round(lag * 1000, 1),
        "p50_ms": round(percentile(waits, 50), 1) if waits else None,
        "p99_ms": round(percentile(waits, 99), 1) if waits else None,
        "max_ms": round(max(waits), 1) if waits else None,
        "unfinished": _unfinished(system, ids, done),
        "left": system.state(),
        "drain_progress": progress,
    }

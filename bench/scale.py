"""Workload 5b: the applier's latency per event with 1k, 100k and 1M finished instances stored.

Flat means the engine does no work per event that grows with what Redis
holds. One private redis-server per size, each filled with that many
finished `three_steps` instances (copies of a real one, `bench.preload`),
each with its own engine in this process (`bench.inprocess`). Then, in
turns over the servers (so that the shared machine's slow moments fall on
every size alike), against live instances:

- batched: L new `three_steps` instances started and run to their end; the
  applier's wall time over the events it applied (starts and task answers,
  which move the instances through the status and state indexes and, at the
  end, into `idx:expiring`: the structures that grow with what is stored);
  and the CPU time over the same events, of this process and of the
  redis-server: the work itself, which the machine's other load inflates far
  less than it inflates wall time;
- one event: a `tick` appended to a live `counter` instance, then one
  `applier.tick()` (leases, timers, a batch of that one event), timed; 10 on
  each size in turn, R in all per size; the median, and the server's own
  time per tick (`INFO commandstats`: the usec of every command but EXEC,
  whose commands count under their own names; the timer script's few
  commands count twice, in EVALSHA and under their names, alike at every
  size).

The batched figures are measured in `repeats` rounds and the median of each
kept: on a shared machine one round may be lucky or unlucky, and the
fastest round would favour whichever size got a quiet moment. Timed
too, for the record: `Orchestrator.start`, and `Orchestrator.list(limit=50)`
(the listing, outside the applier).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Any

import redis

from bench.counting import read_command_stats, reset_command_stats
from bench.inprocess import Engine
from bench.preload import preload, template
from bench.three_steps import NAME
from orchestrator.store.inbox import Inbox
from support.redis_server import private_redis

FLAT = 1.20  # the largest size may be at most 20 % slower than the smallest
WORKLOAD = "5"
HEADROOM = 1.5  # a preload needs its estimated memory times this available
COPY_BYTES = 3500  # first estimate of the memory one copy takes, before one is measured
BLOCK = 10  # one-event batches timed on one size before the next size's turn


@dataclass
class Stored:
    """One size: the engine on its own server, a live counter, the figures."""

    size: int
    engine: Engine
    counter: str
    point: dict[str, Any]


def measure_scale(
    *, sizes: tuple[int, ...], live: int, singles: int, repeats: int
) -> dict[str, Any]:
    stored: list[Stored] = []
    skipped: list[str] = []
    with contextlib.ExitStack() as stack:
        per_copy = float(COPY_BYTES)
        for size in sorted(sizes):
            need = size * per_copy * HEADROOM
            if need > _available_bytes():
                skipped.append(
                    f"{_size(size)}: needs about {need / 2**30:.1f} GiB, "
                    f"{_available_bytes() / 2**30:.1f} GiB available"
                )
                continue
            server = stack.enter_context(private_redis())
            one = _fill(server.url, size)
            stack.callback(one.engine.close)
            stored.append(one)
            if one.point["preloaded"] > 1000:
                per_copy = one.point["bytes_per_copy"]
        for _ in range(repeats):
            for one in stored:
                one.point.setdefault("runs", []).append(_batched(one, live))
        for one in stored:
            one.point.update(_middle(one.point["runs"]))
        for one, figures in zip(stored, _singles(stored, singles), strict=True):
            one.point.update(figures)
            admin = one.engine.app.redis
            one.point["used_memory_after"] = _used(admin)
            one.point["keys"] = int(admin.dbsize())
    points = [one.point for one in stored]
    return {
        "rows": _rows(points, skipped, live),
        "details": {"live": live, "singles": singles, "points": points, "skipped": skipped},
    }


def _fill(url: str, size: int) -> Stored:
    engine = Engine(url)
    admin = engine.app.redis
    keys = engine.app.keys
    original = template(admin, keys, engine.finish(NAME, 1)[0])
    counter = engine.start("counter", 1)[0]
    engine.drain()
    used = _used(admin)
    seconds = preload(admin, keys, original, size - 1, prefix="copy-")
    grown = _used(admin) - used
    point = {
        "size": size,
        "preloaded": size - 1,
        "preload_seconds": round(seconds, 2),
        "preload_per_second": round((size - 1) / seconds) if seconds else None,
        "bytes_per_copy": round(grown / max(1, size - 1), 1),
        "used_memory_preloaded": _used(admin),
    }
    return Stored(size, engine, counter, point)


def _batched(one: Stored, live: int) -> dict[str, Any]:
    """One round: L instances started and run to their end, the applier timed."""
    engine = one.engine
    engine.reset_counts()
    begin = time.perf_counter()
    ids = engine.start(NAME, live)
    start_usec = (time.perf_counter() - begin) * 1e6 / live
    engine.run_to_end()
    counts = engine.statuses(ids)
    if counts.get("completed", 0) != live:
        raise RuntimeError(f"{live} live instances run, statuses {counts}")
    begin = time.perf_counter()
    engine.app.client.list(limit=50)
    listed = (time.perf_counter() - begin) * 1e3
    return {
        "batched_usec_per_event": round(engine.apply_seconds * 1e6 / engine.applied, 1),
        "batched_cpu_usec_per_event": round(
            (engine.apply_cpu + engine.apply_server_cpu) * 1e6 / engine.applied, 1
        ),
        "batched_server_cpu_usec_per_event": round(
            engine.apply_server_cpu * 1e6 / engine.applied, 1
        ),
        "events": engine.applied,
        "start_usec": round(start_usec, 1),
        "list_50_msec": round(listed, 2),
    }


def _singles(stored: list[Stored], singles: int) -> list[dict[str, Any]]:
    """One-event batches, BLOCK at a time on each size in turn, so that the machine's
    slow seconds fall on every size alike; per size, the median and the server's time."""
    times: list[list[float]] = [[] for _ in stored]
    for one in stored:
        reset_command_stats(one.engine.app.redis)
    for _ in range(0, singles, BLOCK):
        for one, found in zip(stored, times, strict=True):
            for _ in range(BLOCK):
                found.append(_one_event(one))
    figures = []
    for one, found in zip(stored, times, strict=True):
        server = read_command_stats(one.engine.app.redis).usec
        figures.append(
            {
                "single_event_usec_median": round(statistics.median(found), 1),
                "single_event_usec_p90": round(statistics.quantiles(found, n=10)[-1], 1),
                "single_event_server_usec": round(
                    sum(usec for name, usec in server.items() if name != "exec") / len(found), 1
                ),
                "single_events": len(found),
            }
        )
    return figures


def _one_event(one: Stored) -> float:
    """Append a tick to the live counter, then time one applier.tick(), in microseconds."""
    one.engine.app.client.inbox.append(Inbox.event("tick", one.counter, {}))
    begin = time.perf_counter()
    applied = one.engine.applier.tick()
    elapsed = (time.perf_counter() - begin) * 1e6
    if applied != 1:
        raise RuntimeError(f"one tick appended, {applied} applied")
    return elapsed


def _middle(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the rounds: one lucky or unlucky round moves none."""
    return {
        name: round(statistics.median(run[name] for run in runs), 1)
        for name in runs[0]
        if name != "events"
    }


def _rows(points: list[dict[str, Any]], skipped: list[str], live: int) -> list[dict[str, Any]]:
    label = f"{WORKLOAD}. apply us/event"
    if len(points) < 2:
        reason = "; ".join(skipped) or "fewer than two sizes measured"
        return [{"workload": label, "system": "orchestrator", "value": None, "note": reason}]
    low, high = points[0], points[-1]
    sizes = f"{_size(low['size'])} -> {_size(high['size'])} stored"
    measured = "measured at " + ", ".join(_size(p["size"]) for p in points)
    rows = []
    for figure, what, how in (
        ("batched_usec_per_event", "batched", f"{live} live 3-step instances run to their end"),
        (
            "batched_cpu_usec_per_event",
            "batched, CPU (client + server)",
            "the same events: CPU time of this process and of redis-server during drain(), "
            "which a busy machine inflates less than wall time",
        ),
        ("single_event_usec_median", "one event alone", "median of one-event batches"),
    ):
        ratio = high[figure] / low[figure]
        rows.append(
            {
                "workload": f"{label}, {what}, {sizes}",
                "system": "orchestrator",
                "value": f"{low[figure]:,.0f} -> {high[figure]:,.0f} ({ratio - 1:+.0%})",
                "target": f"flat (<= +{FLAT - 1:.0%})",
                "met": ratio <= FLAT,
                "note": "; ".join([how, measured, *(f"not run at {s}" for s in skipped)]),
            }
        )
    return rows


def _size(count: int) -> str:
    if count >= 1_000_000 and count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count >= 1000 and count % 1000 == 0:
        return f"{count // 1000}k"
    return str(count)


def _used(admin: redis.Redis) -> int:
    info: dict[str, Any] = admin.info("memory")
    return int(info["used_memory"])


def _available_bytes() -> int:
    """MemAvailable of this machine (Linux): the servers run here."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2**62  # unknown: do not hold back

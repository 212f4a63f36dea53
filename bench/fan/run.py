"""One run of the fan workload: the fan-outs of each system in turn, then the engine's map.

Fan-out/fan-in: bench.flows.driver.throughput, as workload 2 measures 3-step
workflows: W fan-outs preloaded with the workers stopped, on the system's own
private redis-server; the workers start; the clock runs from their first take
from the backlog to the last finish time a fan-in callback recorded. Over the
same window, the Redis round trips of all the system's processes, counted on the
server (bench.flows.trips), per task.

The map: on a fresh private server, the engine's worker started and warmed up by a
small map run to its end (the queues, indexes and inbox streams exist from then on);
`INFO memory` used_memory; one `bench_map` instance of N items started; then, every
POLL s until the instance is in its final state, its status and the RQ jobs of the
tasks queue (waiting, being taken, running: RQ's queue, intermediate queue and
started registry), and every FAN_POLL s the map's tries in flight (the instance's
`fan` field, every POLL until first seen); used_memory again. Items per second: N
over the time from the start call to the first poll that saw the final state. Memory
per item: the used_memory difference over N, each read `settle` s after a run ended
(the clients' buffers shrunk by then), the tasks' heartbeat keys (they expire within
seconds of each task's end) deleted before it, the workers' own records kept in
both.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.registry import StartedJobRegistry

from bench.fan.constructs import CONSTRUCTS, construct
from bench.fan.orch import MODULE
from bench.fan.workflows import CONCURRENCY, MAP, WIDTH
from bench.flows.base import System
from bench.flows.driver import Sizes, WorkersDied, throughput
from bench.flows.orch import OrchestratorSystem
from bench.flows.run import _stopped_cleanly, fresh
from bench.flows.trips import Meter
from orchestrator.runtime.dispatch import TASK_QUEUE

# name -> (module, class, packages it needs)
SYSTEMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "orchestrator": ("bench.fan.orch", "FanOrchestrator", ()),
    "celery": ("bench.fan.celery_app", "CeleryFan", ("celery",)),
    "dramatiq": ("bench.fan.dramatiq_app", "DramatiqFan", ("dramatiq",)),
}
FANOUT = "fan-outs/s, 100 no-op tasks each, then fan-in, 2 workers, W={}"
MAP_LABEL = "map of {:,} no-op items, 2 workers: items/s / Redis B per item"
TASKS_PER_FANOUT = WIDTH + 1  # the items and the fan-in callback
POLL = 0.005  # s, watching the map's instance and the RQ jobs
FAN_POLL = 0.1  # s, reading the items in flight (`fan`: all results so far); until seen: every poll
SAMPLE_EVERY = 0.5  # s, progress samples kept for the details
READY_TIMEOUT = 60.0  # s for the workers to come up


@dataclass(frozen=True)
class FanSizes:
    fanouts: int = 50  # W, preloaded
    items: int = 10_000  # of the one map instance
    warm_items: int = 200  # of the map run before the first reading
    drain: float = 120.0  # s allowed for the preloaded fan-outs
    map_limit: float = 300.0  # s allowed for the map
    settle: float = 1.5  # s before each memory reading: the server shrinks clients' buffers
    constructs: int = 300  # W of the parallel and child rows, preloaded


FULL = FanSizes()
QUICK = FanSizes(fanouts=5, items=1_000, warm_items=100, drain=60.0, map_limit=60.0, constructs=20)


def missing(name: str) -> list[str]:
    return [p for p in SYSTEMS[name][2] if importlib.util.find_spec(p) is None]


def fan_out(name: str, sizes: FanSizes, folder: Path) -> dict[str, Any]:
    module, cls, _ = SYSTEMS[name]
    factory: type[System] = getattr(importlib.import_module(module), cls)
    with fresh(factory, folder) as (system, version):
        part = throughput(system, Sizes(preloaded=sizes.fanouts, drain_preloaded=sizes.drain))
    tasks = part["finished"] * TASKS_PER_FANOUT
    seconds = part["seconds"]
    part["tasks"] = tasks
    part["tasks_per_second"] = round(tasks / seconds) if seconds > 0 else None
    trips, commands = part["redis"]["round_trips"], part["redis"]["commands"]
    part["round_trips_per_task"] = round(trips / tasks, 2) if tasks else None
    part["commands_per_task"] = round(sum(commands.values()) / tasks, 2) if tasks else None
    part["commands_per_task_by_name"] = {
        name: round(calls / tasks, 2) for name, calls in list(commands.items())[:6] if tasks
    }
    # bench.flows counts per workflow step (3 per workflow): not this workload's unit
    for key in [k for k in part["redis"] if k.endswith("_per_step") or "per_step_" in k]:
        del part["redis"][key]
    return {"workers": system.workers_note, "redis": version, "throughput": part}


def fan_row(name: str, found: dict[str, Any], sizes: FanSizes) -> dict[str, Any]:
    part = found["throughput"]
    notes = []
    if part["finished"] < part["workflows"]:
        notes.append(f"{part['workflows'] - part['finished']} of {part['workflows']} unfinished")
    concurrency = f", at most {CONCURRENCY} items at once" if name == "orchestrator" else ""
    notes.append(
        f"{part['tasks_per_second']:,} tasks/s ({WIDTH} items + 1 fan-in each{concurrency})"
    )
    if part["round_trips_per_task"] is not None:
        notes.append(f"{part['round_trips_per_task']:g} Redis round trips per task")
    notes.append(f"worker start-up {part['startup_seconds']} s not counted")
    return {
        "workload": FANOUT.format(sizes.fanouts),
        "system": name,
        "value": part["per_second"],
        "note": "; ".join(notes),
    }


class MapOrchestrator(OrchestratorSystem):
    """The engine's worker with this workload's workflows, for the map."""

    module = MODULE

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        self.workers_note = self.workers_note.replace(
            "instances started one by one with Orchestrator.start",
            "one bench_map instance started with Orchestrator.start",
        )


def _wait_ready(system: System, timeout: float) -> float:
    began = time.monotonic()
    system.start_workers()
    while not system.ready():
        if time.monotonic() - began > timeout:
            raise WorkersDied(f"workers not up in {timeout:g} s: {system.workers.dead()}")
        if dead := system.workers.dead():
            raise WorkersDied("; ".join(dead))
        time.sleep(0.05)
    return round(time.monotonic() - began, 3)


def used_memory(client: redis.Redis, settle: float) -> int:
    """used_memory once the tasks' heartbeat keys are gone (each expires within seconds of
    its task's end; none runs when this is read) and `settle` s after the last run, by when
    the server has shrunk its clients' buffers (clientsCron; read at once, the applier's
    last large MULTI still counted: +-70 KB from run to run). The live workers' records
    stay."""
    time.sleep(settle)
    stale = list(client.scan_iter(match="*:alive:*", count=1000))
    if stale:
        client.delete(*stale)
    info: dict[str, Any] = client.info("memory")
    return int(info["used_memory"])


@dataclass
class Watch:
    """The most seen at once during the map (RQ jobs; the map's tries, sampled less often)."""

    rq_jobs: int = 0  # queue + intermediate queue + started registry
    rq_queued: int = 0  # in the queue alone
    tries: int = 0  # the map's items in flight, from the instance's `fan`
    samples: int = 0
    fan_samples: int = 0


def run_map(system: OrchestratorSystem, items: int, limit: float) -> dict[str, Any]:
    """Start one map of `items` and watch it to its final state (or the limit)."""
    queue = Queue(TASK_QUEUE, connection=system.redis)
    jobs_keys = (queue.key, queue.intermediate_queue_key)
    started_key = StartedJobRegistry(queue=queue).key
    watch = Watch()
    progress: list[dict[str, Any]] = []
    meter = Meter(system.redis, system.driver_count)
    meter.start()
    began = time.time()
    instance_id = system.client.start(MAP, {"items": list(range(items))})
    key = system.keys.instance(instance_id)
    next_fan = next_sample = 0.0
    status = ""
    while True:
        now = time.time() - began
        pipe = system.redis.pipeline(transaction=False)
        for jobs_key in jobs_keys:
            pipe.llen(jobs_key)
        pipe.zcard(started_key)
        pipe.hget(key, "status")
        if reading_fan := now >= next_fan or not watch.fan_samples:  # until first seen
            pipe.hget(key, "fan")
            next_fan = now + FAN_POLL
        found = pipe.execute()
        queued, intermediate, running, raw_status = found[:4]
        status = (raw_status or b"").decode()
        jobs = int(queued) + int(intermediate) + int(running)
        watch.samples += 1
        watch.rq_jobs = max(watch.rq_jobs, jobs)
        watch.rq_queued = max(watch.rq_queued, int(queued))
        done = None
        if reading_fan and found[4]:
            fan = json.loads(found[4])
            watch.fan_samples += 1
            watch.tries = max(watch.tries, len(fan["tries"]))
            done = len(fan["results"])
        if now >= next_sample and done is not None:
            progress.append({"s": round(now, 2), "items_done": done, "rq_jobs": jobs})
            next_sample = now + SAMPLE_EVERY
        if status not in ("", "pending", "running"):
            break
        if now > limit:
            break
        if dead := system.workers.dead():
            raise WorkersDied("; ".join(dead))
        time.sleep(POLL)
    seconds = time.time() - began
    counted = meter.stop(items, seconds)
    instance = system.client.status(instance_id)
    results = instance.context.get("mapping")
    return {
        "instance": instance_id,
        "status": instance.status,
        "state": instance.state,
        "finished": instance.finished,
        "results": len(results) if isinstance(results, list) else None,
        "seconds": round(seconds, 3),
        "last_item_seconds": round(instance.updated_at - began, 3),
        "items_per_second": round(items / seconds, 1) if instance.finished else None,
        "watch": asdict(watch),
        "progress": progress,
        "redis": counted,
    }


def measure_map(sizes: FanSizes, folder: Path) -> dict[str, Any]:
    with fresh(MapOrchestrator, folder) as (system, version):
        assert isinstance(system, MapOrchestrator)
        startup = _wait_ready(system, READY_TIMEOUT)
        warm = run_map(system, sizes.warm_items, READY_TIMEOUT)
        if not warm["finished"]:
            raise WorkersDied(f"the warm-up map did not finish: {warm}")
        before = used_memory(system.redis, sizes.settle)
        found = run_map(system, sizes.items, sizes.map_limit)
        after = used_memory(system.redis, sizes.settle)
        keys = system.keys
        instance_id = found["instance"]
        usage = {
            "instance hash": keys.instance(instance_id),
            "history archive": keys.archive(instance_id),
            "history stream": keys.history(instance_id),
            "applied-ids set": keys.applied(instance_id),
        }
        pipe = system.redis.pipeline(transaction=False)
        for name in usage.values():
            pipe.memory_usage(name, samples=0)
        by_key = dict(zip(usage, pipe.execute(), strict=True))
        inbox = [keys.inbox(p) for p in range(keys.partitions)]
        pipe = system.redis.pipeline(transaction=False)
        for name in inbox:
            pipe.xlen(name)
        inbox_entries = sum(int(n) for n in pipe.execute())
        left = system.state()
        note = system.workers_note
    found.update(
        items=sizes.items,
        concurrency=CONCURRENCY,
        workers=note,
        redis_version=version,
        startup_seconds=startup,
        warm_up={"items": sizes.warm_items, "seconds": warm["seconds"]},
        used_memory={"before": before, "after": after},
        bytes_per_item=round((after - before) / sizes.items, 1),
        memory_usage_by_key={k: int(v or 0) for k, v in by_key.items()},
        inbox_entries_left=inbox_entries,
        left_at_end=left,
    )
    return found


def map_row(found: dict[str, Any]) -> dict[str, Any]:
    watch = found["watch"]
    notes = []
    if not found["finished"]:
        notes.append(
            f"NOT FINISHED: {found['status']} in {found['state']} after {found['seconds']} s, "
            f"{found['progress'][-1]['items_done'] if found['progress'] else '?'} items done"
        )
    notes += [
        f"one instance, max_concurrency {found['concurrency']}, start to final state "
        f"{found['seconds']} s",
        f"Redis: used_memory {found['used_memory']['after'] - found['used_memory']['before']:+,} "
        f"B after vs before (instance hash {found['memory_usage_by_key']['instance hash']:,} B, "
        f"history archive {found['memory_usage_by_key']['history archive']:,} B, "
        f"applied ids {found['memory_usage_by_key']['applied-ids set']:,} B)",
        f"at most {watch['rq_jobs']} RQ jobs queued or running at once (every {POLL * 1000:g} "
        f"ms) and {watch['tries']} items in flight (every {FAN_POLL:g} s): bounded by "
        f"max_concurrency, not the {found['items']:,} items",
    ]
    per_item = found["redis"].get("round_trips_per_step")
    if per_item is not None:
        notes.append(f"{per_item:g} Redis round trips per item")
    return {
        "workload": MAP_LABEL.format(found["items"]),
        "system": "orchestrator",
        "value": [found["items_per_second"], round(found["bytes_per_item"])],
        "target": "figures only",
        "met": None,
        "note": "; ".join(notes),
    }


def run_fan(systems: list[str], sizes: FanSizes, logs: Path | None = None) -> dict[str, Any]:
    """The fan-outs of each system in turn, then the map; the workers' logs go to `logs`
    (kept) or a temporary folder."""
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {
        "sizes": asdict(sizes) | {"width": WIDTH, "concurrency": CONCURRENCY},
        "machine": f"{platform.platform()}; Python {platform.python_version()}",
        "method": (__doc__ or "").strip(),
        "systems": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-fan-") as tmp, _stopped_cleanly():
        base = logs or Path(tmp)
        for name in systems:
            if lacking := missing(name):
                details["systems"][name] = {"skipped": f"not importable: {', '.join(lacking)}"}
                continue
            began = time.perf_counter()
            try:
                found = fan_out(name, sizes, base / name)
            except WorkersDied as exc:
                details["systems"][name] = {"error": str(exc)}
                continue
            found["seconds"] = round(time.perf_counter() - began, 1)
            details["systems"][name] = found
            rows.append(fan_row(name, found, sizes))
        for kind in CONSTRUCTS:
            try:
                built = construct(kind, sizes.constructs, sizes.drain, base / kind)
            except WorkersDied as exc:
                details[kind] = {"error": str(exc)}
                continue
            rows.append(built.pop("row"))
            details[kind] = built
        began = time.perf_counter()
        try:
            found = measure_map(sizes, base / "map")
        except WorkersDied as exc:
            details["map"] = {"error": str(exc)}
        else:
            found["seconds_in_all"] = round(time.perf_counter() - began, 1)
            details["map"] = found
            rows.append(map_row(found))
    return {"rows": rows, "details": details}

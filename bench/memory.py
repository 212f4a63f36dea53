"""Workload 5a: the Redis memory a finished 3-step instance keeps, and each history entry.

On a private redis-server: 200 instances first (the indexes, queues and
inbox streams exist from then on, and the indexes are past the 128 members
up to which Redis keeps a sorted set compact, as they are in any real
deployment), then `INFO memory` used_memory, then N
real `three_steps` instances run to completion by the engine in this
process, then used_memory again. The difference over N is what one finished
instance costs, everything included: its hash, history archive and
applied-ids set, their key and expiry entries, and its members in the
indexes. RQ's keys for the bench's own short-lived workers (`rq:worker:*`)
are deleted before each reading: they are not per instance; so are the tasks'
heartbeat keys, which expire a few seconds after each task.

The history's share is measured by deleting the N histories (a finished
instance's history is an archive, one compressed string: orchestrator.store.archive)
and reading how much used_memory drops; the rest is the instance without its
history. `MEMORY USAGE` (exact, SAMPLES 0) of each key gives the
breakdown, and the raw bytes of the stored fields show how much of a
history entry is data and how much is the structure holding it.
"""

from __future__ import annotations

import statistics
from typing import Any

import redis

from bench.inprocess import Engine
from bench.three_steps import NAME
from orchestrator.store import archive

WARMUP = 200  # more than zset-max-ziplist-entries (128)
INSTANCE_BUDGET = 2048  # bytes, without the history
ENTRY_BUDGET = 200  # bytes per history entry
WORKLOAD = "5"


def measure_memory(url: str, *, instances: int, warmup: int = WARMUP) -> dict[str, Any]:
    admin = redis.Redis.from_url(url)
    admin.flushdb()
    engine = Engine(url)
    try:
        engine.finish(NAME, warmup)
        before = used_memory(admin)
        ids = engine.finish(NAME, instances)
        after = used_memory(admin)
        keys = engine.app.keys
        by_key = {
            "instance hash": _usage(admin, [keys.instance(i) for i in ids]),
            "history archive": _usage(admin, [keys.archive(i) for i in ids]),
            "history stream (none once finished)": _usage(admin, [keys.history(i) for i in ids]),
            "applied-ids set": _usage(admin, [keys.applied(i) for i in ids]),
        }
        entries = [len(engine.app.client.history(i)) for i in ids]
        raw = _raw_entry_bytes(admin, keys.archive(ids[0]))
        sample = _decoded(admin.hgetall(keys.instance(ids[0])))
        pipe = admin.pipeline(transaction=False)
        for instance_id in ids:
            pipe.delete(keys.history(instance_id), keys.archive(instance_id))
        pipe.execute()
        without_history = used_memory(admin)
    finally:
        engine.close()
        admin.close()
    length = statistics.fmean(entries)  # 4: the start and three task answers
    total = (after - before) / instances
    history = (after - without_history) / instances
    instance = total - history
    per_entry = history / length
    rows = [
        {
            "workload": f"{WORKLOAD}. Redis per finished 3-step instance, no history",
            "system": "orchestrator",
            "value": round(instance),
            "unit": "B",
            "target": f"<= {INSTANCE_BUDGET:,} B",
            "met": instance <= INSTANCE_BUDGET,
            "note": f"{instances} instances, INFO memory used_memory delta",
        },
        {
            "workload": f"{WORKLOAD}. Redis per history entry",
            "system": "orchestrator",
            "value": round(per_entry),
            "unit": "B",
            "target": f"<= {ENTRY_BUDGET} B",
            "met": per_entry <= ENTRY_BUDGET,
            "note": f"{length:g} entries per instance; drop when the histories are deleted",
        },
    ]
    details = {
        "instances": instances,
        "history_entries_per_instance": length,
        "bytes_per_instance_total": round(total, 1),
        "bytes_per_instance_without_history": round(instance, 1),
        "history_bytes_per_instance": round(history, 1),
        "history_bytes_per_entry": round(per_entry, 1),
        "memory_usage_by_key_mean": {name: round(v, 1) for name, v in by_key.items()},
        "raw_bytes_per_history_entry": raw,
        "instance_hash_fields_bytes": sum(len(k) + len(v) for k, v in sample.items()),
        "used_memory": {"before": before, "after": after, "without_history": without_history},
    }
    return {"rows": rows, "details": details}


def used_memory(admin: redis.Redis) -> int:
    """used_memory once the bench's own RQ worker records are gone, and the tasks'
    heartbeat keys (left to expire within HEARTBEAT_TTL of each task's end: not kept)."""
    for pattern in ("rq:worker:*", "*:alive:*"):
        stale = list(admin.scan_iter(match=pattern, count=1000))
        if stale:
            admin.delete(*stale)
    info: dict[str, Any] = admin.info("memory")
    return int(info["used_memory"])


def _usage(admin: redis.Redis, keys: list[str]) -> float:
    pipe = admin.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return statistics.fmean(int(v or 0) for v in pipe.execute())


def _raw_entry_bytes(admin: redis.Redis, key: str) -> dict[str, Any]:
    """Field names and values of one finished instance's history entries, in bytes,
    before the archive compresses them, and the archive's own size."""
    blob: Any = admin.get(key)
    entries = archive.unpack(blob)
    sizes = [sum(len(k) + len(v) for k, v in fields.items()) for fields in entries]
    fields: dict[str, float] = {}
    for entry in entries:
        for name, value in entry.items():
            fields[name] = fields.get(name, 0) + len(value) / len(entries)
    return {
        "per_entry": sizes,
        "mean": round(statistics.fmean(sizes), 1),
        "mean_value_bytes_by_field": {k: round(v, 1) for k, v in fields.items()},
        "archive_bytes": len(blob or b""),
    }


def _decoded(raw: Any) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}

"""Each process's metrics in Redis: one hash a process, summed by whoever reads them.

Workers run on many machines against one Redis, so no shared folder (prometheus_client's
multiprocess mode) can hold what they count. Each process keeps its own counts in memory
(orchestrator.runtime.metrics) and writes them here every few seconds, as absolute values
(HSET: a write lost or repeated changes nothing); a forked RQ work-horse, which lives for
one job, adds what its job counted (HINCRBYFLOAT) to a hash of its parent's that only
horses write. `/metrics` (orchestrator.entry.http.metrics) reads every hash and sums them.

  N:metrics            zset  process names (HOST:PID, or HOST:PID:jobs for its horses)
                             by the time of their last write
  N:metrics:PROCESS    hash  sample -> its value (a float, as text); a sample's field is
                             the JSON [name, [[label, value], ...]] (labels sorted)

Both expire TTL after their last write (a day by default): a process that died keeps its
counts until then, so sums do not drop when a worker is restarted. What is read back is
not trusted: a field or value that does not parse is skipped, and at most MAX_PROCESSES
hashes are read.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping

import redis

from orchestrator.store.keys import Keys

METRICS_TTL = 86400.0  # seconds a process's counts outlive its last write
MAX_PROCESSES = 10_000  # hashes read at most by one scrape
MAX_FIELD = 2048  # bytes of a sample's field, at most (longer ones are skipped)

Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Labels]  # a sample's name and its labels, sorted


def sample_field(name: str, labels: Labels) -> str:
    """The hash field of a sample (labels sorted, so one sample has one field)."""
    return json.dumps([name, [list(pair) for pair in sorted(labels)]], separators=(",", ":"))


def parse_field(field: bytes | str) -> Sample | None:
    """The sample a field names; None for one that is not a field this module wrote."""
    if len(field) > MAX_FIELD:
        return None
    try:
        found = json.loads(field)
    except (ValueError, RecursionError):
        return None
    if not (isinstance(found, list) and len(found) == 2 and isinstance(found[0], str)):
        return None
    pairs = found[1]
    if not isinstance(pairs, list):
        return None
    labels: list[tuple[str, str]] = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2):
            return None
        if not (isinstance(pair[0], str) and isinstance(pair[1], str)):
            return None
        labels.append((pair[0], pair[1]))
    return found[0], tuple(sorted(labels))


def _value(raw: bytes | str) -> float | None:
    try:
        value = float(raw)
    except (ValueError, TypeError):
        return None
    return value if math.isfinite(value) else None


class MetricsStore:
    """Writes one process's samples, and reads back every process's."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl: float = METRICS_TTL) -> None:
        self.redis = client
        self.keys = keys
        self.ttl = ttl

    def write(
        self, process: str, samples: Mapping[Sample, float], now: float | None = None
    ) -> None:
        """The process's samples, as absolute values, in one round trip."""
        self._write(process, samples, add=False, now=now)

    def add(self, process: str, samples: Mapping[Sample, float], now: float | None = None) -> None:
        """Add the samples to what the hash holds (a work-horse's counts of one job)."""
        self._write(process, samples, add=True, now=now)

    def _write(
        self, process: str, samples: Mapping[Sample, float], *, add: bool, now: float | None
    ) -> None:
        now = time.time() if now is None else now
        key = self.keys.metrics_of(process)
        ttl_ms = max(1, int(self.ttl * 1000))
        pipe = self.redis.pipeline(transaction=False)
        fields = {sample_field(name, labels): value for (name, labels), value in samples.items()}
        if add:
            for field, value in fields.items():
                if value:
                    pipe.hincrbyfloat(key, field, value)
        elif fields:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
        pipe.pexpire(key, ttl_ms)
        pipe.zadd(self.keys.metrics, {process: now})
        pipe.pexpire(self.keys.metrics, ttl_ms)
        pipe.execute()

    def processes(self, now: float | None = None) -> list[str]:
        """The processes that wrote within the TTL; older entries are removed."""
        now = time.time() if now is None else now
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(self.keys.metrics, "-inf", f"({now - self.ttl}")
        pipe.zrevrangebyscore(self.keys.metrics, "+inf", now - self.ttl, start=0, num=MAX_PROCESSES)
        _, members = pipe.execute()
        return [m.decode(errors="replace") for m in members]

    def read(self, now: float | None = None) -> dict[str, dict[Sample, float]]:
        """Every live process's samples (process -> sample -> value), unreadable ones left out."""
        names = self.processes(now)
        if not names:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.metrics_of(name))
        found: dict[str, dict[Sample, float]] = {}
        for name, raw in zip(names, pipe.execute(), strict=True):
            samples = dict(_parsed(raw.items()))
            if samples:
                found[name] = samples
        return found


def _parsed(items: Iterable[tuple[bytes, bytes]]) -> Iterable[tuple[Sample, float]]:
    for field, raw in items:
        sample = parse_field(field)
        value = _value(raw)
        if sample is not None and value is not None:
            yield sample, value

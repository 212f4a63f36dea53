"""`GET /metrics`: every process's counts, summed, and gauges read live from Redis.

Each process writes its counts to a hash of its own (orchestrator.runtime.metrics,
orchestrator.store.metrics); `Summed`, a prometheus_client collector, reads all the hashes
at scrape time and sums counters and histogram buckets across processes, label set by
label set. A process that died keeps its counts until its hash expires (a day), so a sum
does not drop when a worker restarts; when a hash expires Prometheus sees a counter reset,
which `rate()` and `increase()` allow for.

Read live at scrape time, from the keys the engine keeps anyway:

  orchestrator_inbox_lag{partition}        entries of an inbox not yet read by its applier
                                           (XINFO GROUPS' lag; worked out from the stream
                                           before Redis 7: orchestrator.store.backlog)
  orchestrator_inbox_pending{partition}    read, not yet committed
  orchestrator_rq_queue_depth{queue}       jobs waiting in each RQ queue
  orchestrator_dead_letters_stored         entries in the dead-letter stream
  orchestrator_appliers_live               appliers seen within the lease time to live
  orchestrator_metrics_processes           process hashes summed

The answer is prometheus_client's text format (`generate_latest`), computed on the
thread pool: a scrape costs a few pipelined round trips, whatever the number of instances.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from rq import Queue
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.entry.bootstrap import App
from orchestrator.runtime.dispatch import NOTIFICATION_QUEUE, TASK_QUEUE
from orchestrator.runtime.metrics import FAMILIES, Family
from orchestrator.store import backlog
from orchestrator.store.keys import Keys
from orchestrator.store.metrics import Labels, MetricsStore, Sample

QUEUES = (TASK_QUEUE, NOTIFICATION_QUEUE)


def summed(processes: Iterable[Mapping[Sample, float]]) -> dict[Sample, float]:
    """Every sample's sum over the processes, label set by label set."""
    total: dict[Sample, float] = {}
    for samples in processes:
        for sample, value in samples.items():
            total[sample] = total.get(sample, 0.0) + value
    return total


def families(total: Mapping[Sample, float]) -> Iterator[Metric]:
    """The defined metrics (runtime.metrics.FAMILIES) from the summed samples; a sample
    no definition names, or with other labels than its definition's, is left out."""
    by_name: dict[str, list[tuple[Labels, float]]] = {}
    for (name, labels), value in total.items():
        by_name.setdefault(name, []).append((labels, value))
    for family in FAMILIES:
        if family.kind == "histogram":
            yield _histogram(family, by_name)
        else:
            yield _counter(family, by_name.get(f"{family.name}_total", []))


def _values(family: Family, labels: Labels) -> list[str] | None:
    found = dict(labels)
    if set(found) != set(family.labels):
        return None
    return [found[name] for name in family.labels]


def _counter(family: Family, samples: list[tuple[Labels, float]]) -> Metric:
    metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
    for labels, value in sorted(samples):
        values = _values(family, labels)
        if values is not None:
            metric.add_metric(values, value)
    return metric


def _le(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _histogram(family: Family, by_name: Mapping[str, list[tuple[Labels, float]]]) -> Metric:
    metric = HistogramMetricFamily(family.name, family.help, labels=family.labels)
    buckets: dict[tuple[str, ...], dict[float, float]] = {}
    sums: dict[tuple[str, ...], float] = {}
    for labels, value in by_name.get(f"{family.name}_bucket", []):
        le = _le(dict(labels).get("le", ""))
        values = _values(family, tuple(p for p in labels if p[0] != "le"))
        if values is not None and not math.isnan(le):
            series = buckets.setdefault(tuple(values), {})
            series[le] = series.get(le, 0.0) + value
    for labels, value in by_name.get(f"{family.name}_sum", []):
        values = _values(family, labels)
        if values is not None:
            sums[tuple(values)] = sums.get(tuple(values), 0.0) + value
    for key, series in sorted(buckets.items()):
        if math.inf not in series:
            continue  # no +Inf bucket: not a histogram this module wrote
        pairs = [(_bound(le), count) for le, count in sorted(series.items())]
        metric.add_metric(list(key), pairs, sums.get(key, 0.0))
    return metric


def _bound(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(le)


class Summed(Collector):
    """Every process's counts summed, and the gauges read live from Redis."""

    def __init__(self, client: redis.Redis, keys: Keys, lease_ttl: float = 10.0) -> None:
        self.redis = client
        self.keys = keys
        self.store = MetricsStore(client, keys)
        self.lease_ttl = lease_ttl

    def collect(self) -> Iterator[Metric]:
        processes = self.store.read()
        yield from families(summed(processes.values()))
        yield from self.live(len(processes))

    def live(self, processes: int) -> Iterator[Metric]:
        keys = self.keys
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        backlog.queue(pipe, keys)
        for queue in QUEUES:
            pipe.llen(Queue.redis_queue_namespace_prefix + queue)
        pipe.xlen(keys.deadletters)
        pipe.zcount(keys.appliers, now - self.lease_ttl, "+inf")
        replies = iter(pipe.execute(raise_on_error=False))
        inboxes = backlog.read(keys, replies)
        rest = list(replies)
        lag = GaugeMetricFamily(
            "orchestrator_inbox_lag",
            "Entries of a partition's inbox not yet read by its applier",
            labels=["partition"],
        )
        pending = GaugeMetricFamily(
            "orchestrator_inbox_pending",
            "Entries of a partition's inbox read by its applier and not yet committed",
            labels=["partition"],
        )
        for inbox in inboxes:
            lag.add_metric([str(inbox.partition)], inbox.lag)
            pending.add_metric([str(inbox.partition)], inbox.pending)
        yield lag
        yield pending
        depth = GaugeMetricFamily(
            "orchestrator_rq_queue_depth", "Jobs waiting in an RQ queue", labels=["queue"]
        )
        for queue, count in zip(QUEUES, rest, strict=False):
            if isinstance(count, int):
                depth.add_metric([queue], count)
        yield depth
        dead, appliers = rest[len(QUEUES)], rest[len(QUEUES) + 1]
        if isinstance(dead, int):
            yield GaugeMetricFamily(
                "orchestrator_dead_letters_stored", "Entries in the dead-letter stream", dead
            )
        if isinstance(appliers, int):
            yield GaugeMetricFamily(
                "orchestrator_appliers_live",
                "Appliers seen within the lease time to live",
                appliers,
            )
        yield GaugeMetricFamily(
            "orchestrator_metrics_processes", "Processes whose counts are summed", processes
        )


def registry_of(client: redis.Redis, keys: Keys, lease_ttl: float = 10.0) -> CollectorRegistry:
    """A registry holding the summing collector alone (no process or platform metrics of
    the serve process: they would describe one process of many)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Summed(client, keys, lease_ttl))
    return registry


def metrics_route(app: App, path: str = "/metrics") -> Route:
    """`GET /metrics` for the App's Redis and keys, in Prometheus's text format."""
    registry = registry_of(app.redis, app.keys, app.settings.lease_ttl)

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(
            body,
            media_type=CONTENT_TYPE_LATEST,
            headers={"Cache-Control": "no-store"},
        )

    return Route(path, metrics, methods=["GET"])

"""What each process counts for `/metrics`: the metric definitions, the process's own
registry, and the thread that writes it to Redis.

Workers run on several machines against one Redis, so prometheus_client's multiprocess
mode (one shared folder) does not fit. Each process (the applier, each task and
notification worker, `orchestrator serve`) counts in a `CollectorRegistry` of its own,
installed by its composition root (orchestrator.entry.worker `start_metrics`); a thread
writes the registry's samples, as absolute values, to the process's hash in Redis every
FLUSH_EVERY seconds and when the process stops (orchestrator.store.metrics). `/metrics`
(orchestrator.entry.http.metrics) sums every process's hash, by label set, and adds what
it reads live from Redis (inbox lag, queue depths, dead letters, live appliers).

A forked RQ work-horse (`--isolation job`, `worker --burst`) lives for one job and has
no thread: `current()` there gives a registry of the horse's own, and the job's end
(`job_done`) adds what it counted to its parent's `:jobs` hash (HINCRBYFLOAT).

With ORCHESTRATOR_METRICS=0 nothing is installed: `current()` is None, and every place
that counts costs one global lookup and a test. Where the applier counts, it counts once
a batch (`batch_committed`); the job wrappers a few lookups a job. Labels are bounded: a
label takes at most a fixed number of distinct values in a process (the rest become
`other`), and none is an instance id; a task's failures are labelled by the exception's
class name, never its message.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram

from orchestrator.core.effects import PublishEvent
from orchestrator.store.metrics import Labels, MetricsStore, Sample

log = logging.getLogger("orchestrator.runtime.metrics")
FLUSH_EVERY = 5.0  # seconds between a process's writes of its counts
OTHER = "other"  # the label value past a label's limit
MAX_LABEL = 100  # characters of a label value, at most
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class Family:
    """One metric as every process defines it and `/metrics` shows it."""

    name: str  # without `_total` for a counter
    kind: str  # counter | histogram
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


FAMILIES = (
    Family("orchestrator_events_applied", "counter", "Events applied", ("workflow",)),
    Family(
        "orchestrator_transitions",
        "counter",
        "Events applied by what they did (started, transition, retry, failed, ...)",
        ("workflow", "outcome"),
    ),
    Family(
        "orchestrator_instances_finished",
        "counter",
        "Instances that reached a final status",
        ("workflow", "status"),
    ),
    Family("orchestrator_retries", "counter", "Tries armed again after a failure", ("workflow",)),
    Family(
        "orchestrator_events_published", "counter", "Events published by instances", ("workflow",)
    ),
    Family(
        "orchestrator_dead_letters",
        "counter",
        "Entries moved to the dead letters, by where they came from",
        ("source",),
    ),
    Family(
        "orchestrator_task_duration_seconds",
        "histogram",
        "Wall time of a task's try (compensations too)",
        ("task",),
        TASK_BUCKETS,
    ),
    Family(
        "orchestrator_task_failures",
        "counter",
        "Task tries that raised, by the exception's class name",
        ("task", "error_type"),
    ),
    Family(
        "orchestrator_compensations",
        "counter",
        "Compensation tries run, by how they ended",
        ("task", "outcome"),
    ),
    Family(
        "orchestrator_tasks_lost",
        "counter",
        "Jobs the watchdog found lost (their process died)",
        ("kind",),
    ),
    Family(
        "orchestrator_notifications",
        "counter",
        "Notification tries, by channel and outcome",
        ("channel", "status"),
    ),
    Family(
        "orchestrator_provider_latency_seconds",
        "histogram",
        "Wall time of one send to a channel's provider",
        ("channel",),
        PROVIDER_BUCKETS,
    ),
    Family(
        "orchestrator_schedule_ticks",
        "counter",
        "Schedule ticks played, by whether they started an instance",
        ("workflow", "outcome"),
    ),
)
LIMITS = {"workflow": 200, "task": 500, "error_type": 50, "channel": 20}  # distinct values


class Bounded:
    """A label's values in this process: the first `limit` distinct ones, then OTHER."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        value = value[:MAX_LABEL]
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


class _Instance(Protocol):
    @property
    def workflow(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def finished(self) -> bool: ...


class Committed(Protocol):
    """What the applier committed for one instance (runtime.batch_writer.Work)."""

    @property
    def before(self) -> _Instance: ...
    @property
    def after(self) -> _Instance: ...
    @property
    def history(self) -> Sequence[Mapping[str, str]]: ...
    @property
    def effects(self) -> Sequence[tuple[int, int, object]]: ...


class ProcessMetrics:
    """One process's metrics, in a registry of its own, and where they are written."""

    def __init__(self, store: MetricsStore, process: str, *, horse: bool = False) -> None:
        self.store = store
        self.process = process
        self.horse = horse  # a forked work-horse: adds its counts at each job's end
        self.pid = os.getpid()
        self.registry = CollectorRegistry(auto_describe=False)
        made: dict[str, Counter | Histogram] = {}
        for family in FAMILIES:
            if family.kind == "histogram":
                made[family.name] = Histogram(
                    family.name,
                    family.help,
                    family.labels,
                    registry=self.registry,
                    buckets=family.buckets,
                )
            else:
                made[family.name] = Counter(
                    family.name, family.help, family.labels, registry=self.registry
                )
        self._made = made
        self._bounded = {name: Bounded(limit) for name, limit in LIMITS.items()}
        self._sent: dict[Sample, float] = {}  # a horse's counts already added
        self._lock = threading.Lock()  # one flush at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- counting -------------------------------------------------------------

    def counter(self, name: str) -> Counter:
        made = self._made[name]
        assert isinstance(made, Counter)
        return made

    def histogram(self, name: str) -> Histogram:
        made = self._made[name]
        assert isinstance(made, Histogram)
        return made

    def label(self, kind: str, value: str) -> str:
        return self._bounded[kind](value)

    def batch_committed(self, items: Iterable[Committed], dead: int) -> None:
        """One applier batch, once committed: its events, transitions, finishes, retries,
        published events and dead letters, each counter incremented once per label set."""
        applied: Tally[str] = Tally()
        outcomes: Tally[tuple[str, str]] = Tally()
        finished: Tally[tuple[str, str]] = Tally()
        published: Tally[str] = Tally()
        for item in items:
            if not item.history:
                continue
            after = item.after
            workflow = after.workflow
            applied[workflow] += len(item.history)
            for entry in item.history:
                outcomes[workflow, entry.get("outcome", "")] += 1
            if after.finished and not item.before.finished:
                finished[workflow, after.status] += 1
            for _, _, effect in item.effects:
                if isinstance(effect, PublishEvent):
                    published[workflow] += 1
        bound = self._bounded["workflow"]
        for workflow, count in applied.items():
            self.counter("orchestrator_events_applied").labels(bound(workflow)).inc(count)
        transitions = self.counter("orchestrator_transitions")
        retries = self.counter("orchestrator_retries")
        for (workflow, outcome), count in outcomes.items():
            transitions.labels(bound(workflow), outcome[:MAX_LABEL]).inc(count)
            if outcome == "retry":
                retries.labels(bound(workflow)).inc(count)
        for (workflow, status), count in finished.items():
            self.counter("orchestrator_instances_finished").labels(bound(workflow), status).inc(
                count
            )
        for workflow, count in published.items():
            self.counter("orchestrator_events_published").labels(bound(workflow)).inc(count)
        if dead:
            self.dead_letters("inbox", dead)

    def task_finished(
        self, task: str, kind: str, seconds: float, error_type: str | None = None
    ) -> None:
        """One task's (or compensation's) try: its duration; its failure, by error type."""
        name = self._bounded["task"](task)
        self.histogram("orchestrator_task_duration_seconds").labels(name).observe(seconds)
        if error_type is not None:
            error = self._bounded["error_type"](error_type)
            self.counter("orchestrator_task_failures").labels(name, error).inc()
        if kind == "compensation":
            outcome = "completed" if error_type is None else "failed"
            self.counter("orchestrator_compensations").labels(name, outcome).inc()

    def tasks_lost(self, kind: str, count: int = 1) -> None:
        self.counter("orchestrator_tasks_lost").labels(kind[:MAX_LABEL]).inc(count)

    def dead_letters(self, source: str, count: int = 1) -> None:
        self.counter("orchestrator_dead_letters").labels(source[:MAX_LABEL]).inc(count)

    def notification(self, channel: str, status: str) -> None:
        found = self._bounded["channel"](channel)
        self.counter("orchestrator_notifications").labels(found, status[:MAX_LABEL]).inc()

    def provider_latency(self, channel: str, seconds: float) -> None:
        found = self._bounded["channel"](channel)
        self.histogram("orchestrator_provider_latency_seconds").labels(found).observe(seconds)

    def schedule_ticks(self, workflow: str, started: int, skipped: int) -> None:
        ticks = self.counter("orchestrator_schedule_ticks")
        name = self._bounded["workflow"](workflow)
        if started:
            ticks.labels(name, "started").inc(started)
        if skipped:
            ticks.labels(name, "skipped").inc(skipped)

    # -- writing ----------------------------------------------------------------

    def samples(self) -> dict[Sample, float]:
        """Every sample of the registry (counters' `_created` left out: a sum of them
        means nothing)."""
        found: dict[Sample, float] = {}
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name.endswith("_created"):
                    continue
                labels: Labels = tuple(sorted(sample.labels.items()))
                found[sample.name, labels] = sample.value
        return found

    def flush(self) -> None:
        """Write the counts: all of them (a process), or those new since the last (a horse)."""
        with self._lock:
            samples = self.samples()
            if not self.horse:
                self.store.write(self.process, samples)
                return
            new = {k: v - self._sent.get(k, 0.0) for k, v in samples.items()}
            new = {k: v for k, v in new.items() if v}
            if new:
                self.store.add(self.process, new)
            self._sent = samples

    def job_done(self) -> None:
        """A job ended: a work-horse, which ends with it, adds its counts now."""
        if self.horse:
            self._flush_quietly()

    def start(self, every: float = FLUSH_EVERY) -> None:
        """Write the counts every `every` seconds, on a thread, until `stop`."""
        if self.horse or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(every,), name="metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write the counts one last time."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self._flush_quietly()

    def _run(self, every: float) -> None:
        failing = False
        while not self._stop.wait(every):
            try:
                self.flush()
                failing = False
            except Exception as exc:  # Redis away: counts are kept, written next time
                if not failing:
                    log.warning("metrics: writing failed (%s); trying again", type(exc).__name__)
                failing = True

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception as exc:
            log.warning("metrics: writing failed (%s)", type(exc).__name__)


_process: ProcessMetrics | None = None
_horse: ProcessMetrics | None = None


def process_name() -> str:
    """This process's name among the writers: HOST:PID."""
    return f"{socket.gethostname()}:{os.getpid()}"


def install(store: MetricsStore, every: float = FLUSH_EVERY) -> ProcessMetrics:
    """Count in this process from now on, written to `store` every `every` seconds (the
    composition root calls this once, at the process's start-up); a process's earlier
    metrics are stopped and written first."""
    global _process
    previous = _process
    if previous is not None and previous.pid == os.getpid():
        previous.stop()
    _process = ProcessMetrics(store, process_name())
    _process.start(every)
    return _process


def uninstall() -> None:
    """Stop counting in this process (its counts written one last time)."""
    global _process, _horse
    found, _process, _horse = _process, None, None
    if found is not None and found.pid == os.getpid():
        found.stop()


def current() -> ProcessMetrics | None:
    """The process's metrics; None when none are installed (ORCHESTRATOR_METRICS=0). In a
    forked child of a process that counts (an RQ work-horse), the child's own."""
    found = _process
    if found is None or found.pid == os.getpid():
        return found
    return _horse_of(found)


def job_done() -> None:
    """A job ended: in a forked work-horse of a process that counts, its counts are added
    to Redis now (it ends with the job); anywhere else, nothing."""
    found = _process
    if found is not None and found.pid != os.getpid():
        _horse_of(found).job_done()


def _horse_of(parent: ProcessMetrics) -> ProcessMetrics:
    global _horse
    if _horse is None or _horse.pid != os.getpid():
        _horse = ProcessMetrics(parent.store, f"{parent.process}:jobs", horse=True)
    return _horse

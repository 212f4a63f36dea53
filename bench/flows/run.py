"""One run of the suite: each system in turn, each workload on its own private redis-server.

The suite's sizes (FULL, QUICK) also say which systems are measured alongside those
asked for: the engine's publishing variant whenever the engine is, since issue #17's
figure is the ratio of the two in the same run; QUICK measures it for throughput only.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import platform
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, runtime_checkable

from bench.flows import driver, overhead
from bench.flows.base import STRANDED_KEY, System
from bench.flows.driver import Sizes, WorkersDied, latency, throughput, warm_up
from bench.flows.trips import check_method
from bench.targets import METRICS, PUBLISHING, PUBLISHING_SYSTEM
from support.redis_server import private_redis

# name -> (module, class, packages it needs)
SYSTEMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "orchestrator": ("bench.flows.orch", "OrchestratorSystem", ()),
    "orchestrator-job": ("bench.flows.orch", "OrchestratorForking", ()),
    PUBLISHING_SYSTEM: ("bench.flows.orch", "OrchestratorPublishing", ()),
    "rq": ("bench.flows.rq_chain", "RqSystem", ()),
    "celery": ("bench.flows.celery_app", "CelerySystem", ("celery",)),
    "dramatiq": ("bench.flows.dramatiq_app", "DramatiqSystem", ("dramatiq",)),
}
THROUGHPUT = "3-step workflows/s, 2 workers, W={}"
LATENCY = "latency p50/p99 ms at {}/s"
PUBLISHING_RATIO = PUBLISHING + " throughput with / without it, W={}"
PUBLISHING_UNREAD = PUBLISHING + " with lifecycle events too, no subscriber, W={}"
PUBLISHING_LAG = PUBLISHING + " subscriber's lag at the last finish, events / s to catch up"
PUBLISHING_EVENTS = PUBLISHING + " events per workflow, published / consumed"
METRICS_COUNTS = METRICS + " /metrics workflows completed / events applied, W={}"


@dataclass(frozen=True)
class Preset(Sizes):
    """Sizes, and the systems measured with those asked for (`alongside`: measured after
    the first of each pair when it is asked for and the second is not), and those
    measured for throughput only."""

    alongside: tuple[tuple[str, str], ...] = (("orchestrator", PUBLISHING_SYSTEM),)
    throughput_only: tuple[str, ...] = ()
    without_subscriber: bool = True  # the publishing variant's throughput once more, unread
    overhead_workflows: int = 2000  # bench.flows.overhead: W of each paired round
    overhead_rounds: int = 9  # many short rounds: a median that noise moves less


FULL = Preset()
QUICK = Preset(
    preloaded=200,
    rates=((50, 2.0), (500, 0.5)),
    drain=5.0,
    drain_preloaded=20.0,
    throughput_only=(PUBLISHING_SYSTEM,),
    without_subscriber=False,
    overhead_workflows=1000,
    overhead_rounds=1,  # a smoke run: one round says every variant runs to the end
)


@runtime_checkable
class Subscribed(Protocol):
    """A system with a subscriber to report on after its throughput run."""

    def subscriber_report(self) -> dict[str, Any]: ...


@runtime_checkable
class Counting(Protocol):
    """A system whose `/metrics` is scraped after its throughput run (bench.flows.orch)."""

    def metrics_report(self, finished: int) -> dict[str, Any]: ...


def with_alongside(systems: Sequence[str], sizes: Sizes) -> list[str]:
    out: list[str] = []
    for name in systems:
        out.append(name)
        for first, then in getattr(sizes, "alongside", ()):
            if name == first and then not in systems:
                out.append(then)
    return out


def missing(name: str) -> list[str]:
    return [p for p in SYSTEMS[name][2] if importlib.util.find_spec(p) is None]


@contextlib.contextmanager
def _stopped_cleanly() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that no worker process outlives the run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def fresh(factory: type[System], folder: Path) -> Iterator[tuple[System, str]]:
    """The system on a new private redis-server; its workers stopped at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    with private_redis() as server:
        system = factory(server.url, folder)
        try:
            yield system, server.version
        finally:
            system.close()


def system_class(name: str) -> type[System]:
    module, cls, _ = SYSTEMS[name]
    factory: type[System] = getattr(importlib.import_module(module), cls)
    return factory


def run_system(name: str, sizes: Sizes, folder: Path) -> dict[str, Any]:
    """Each workload on its own server and workers: no backlog carries over."""
    factory = system_class(name)
    found: dict[str, Any] = {}
    with fresh(factory, folder / "throughput") as (system, version):
        found["workers"], found["redis"] = system.workers_note, version
        found["throughput"] = _settled(system, throughput(system, sizes))
        if isinstance(system, Subscribed):
            found["subscriber"] = system.subscriber_report()
        if isinstance(system, Counting) and getattr(system, "scraped_after_run", False):
            found["metrics"] = system.metrics_report(found["throughput"]["finished"])
            if not found["metrics"]["agree"]:
                print(
                    f"{name}: /metrics DISAGREES with the bench: {found['metrics']}",
                    file=sys.stderr,
                )
    unread: type[System] | None = getattr(factory, "without_subscriber", None)
    if unread is not None and getattr(sizes, "without_subscriber", False):
        with fresh(unread, folder / "throughput-unread") as (system, _):
            found["throughput_unread"] = _settled(system, throughput(system, sizes))
    if name in getattr(sizes, "throughput_only", ()):
        return found
    for rate, seconds in sizes.rates:
        with fresh(factory, folder / f"latency-{rate}") as (system, _):
            warm = warm_up(system)
            part = _settled(system, latency(system, rate, seconds, sizes.drain))
            found[f"latency_{rate}"] = {**part, "warm_up_seconds": warm}
    return found


def _settled(system: System, part: dict[str, Any]) -> dict[str, Any]:
    """Once every workflow has finished, what the system's books say (after their
    last writes); a backlog left unfinished is not waited for."""
    if part["finished"] == part["workflows"]:
        system.settle(10.0)
    return {**part, "left_at_end": system.state()}


def rows_of(name: str, found: dict[str, Any], sizes: Sizes) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def strandings(part: dict[str, Any]) -> list[str]:
        """RQ's dependents left in the ready registry, counted in its workers' logs."""
        count = part["left"].get(STRANDED_KEY)
        return [] if count is None else [f"{count} dependent jobs stranded in the ready registry"]

    tp = found["throughput"]
    notes = [f"worker start-up {tp['startup_seconds']} s not counted"]
    if tp["finished"] < tp["workflows"]:
        notes.insert(0, f"{tp['workflows'] - tp['finished']} of {tp['workflows']} unfinished")
    notes += strandings(tp)
    rows.append(
        {
            "workload": THROUGHPUT.format(sizes.preloaded),
            "system": name,
            "value": tp["per_second"],
            "note": "; ".join(notes),
        }
    )
    for rate, _ in sizes.rates:
        if f"latency_{rate}" not in found:  # measured for throughput only
            continue
        lat = found[f"latency_{rate}"]
        notes = []
        if lat["finished"] < lat["workflows"]:
            notes.append(
                f"{lat['workflows'] - lat['finished']} of {lat['workflows']} unfinished "
                f"after {sizes.drain:g} s of drain: lower bounds"
            )
        if lat["achieved_rate"] and lat["achieved_rate"] < 0.95 * rate:
            notes.append(
                f"client submitted only {lat['achieved_rate']}/s "
                f"({lat['workflows']} of {lat['planned']} planned)"
            )
        notes.append(f"max {lat['max_ms']} ms")
        notes += strandings(lat)
        rows.append(
            {
                "workload": LATENCY.format(rate),
                "system": name,
                "value": [lat["p50_ms"], lat["p99_ms"]],
                "note": "; ".join(notes),
            }
        )
    return rows


def run_flows(systems: list[str], sizes: Sizes, logs: Path | None = None) -> dict[str, Any]:
    """Each system in turn; the workers' logs go to `logs` (kept) or a temporary folder."""
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {
        "sizes": {
            "preloaded": sizes.preloaded,
            "rates": [{"per_second": r, "seconds": s} for r, s in sizes.rates],
        },
        "machine": f"{platform.platform()}; Python {platform.python_version()}",
        "method": (driver.__doc__ or "").strip(),
        "systems": {},
    }
    with private_redis() as server:  # the round-trip count, on known requests first
        details["round_trips_check"] = check_method(server.url)
    with tempfile.TemporaryDirectory(prefix="bench-flows-") as tmp, _stopped_cleanly():
        base = logs or Path(tmp)
        for name in with_alongside(systems, sizes):
            if lacking := missing(name):
                details["systems"][name] = {"skipped": f"not importable: {', '.join(lacking)}"}
                continue
            folder = base / name
            began = time.perf_counter()
            try:
                found = run_system(name, sizes, folder)
            except WorkersDied as exc:
                details["systems"][name] = {"error": str(exc)}
                continue
            found["seconds"] = round(time.perf_counter() - began, 1)
            details["systems"][name] = found
            rows += rows_of(name, found, sizes)
        rows += publishing_rows(details["systems"], sizes) + metrics_rows(details["systems"], sizes)
        rounds = getattr(sizes, "overhead_rounds", 0)
        if "orchestrator" in systems and rounds:
            workflows = getattr(sizes, "overhead_workflows", sizes.preloaded)
            details["overhead"] = overhead.measure(workflows, rounds, base / "overhead")
            rows += overhead.rows(details["overhead"])
    return {"rows": rows, "details": details}


def metrics_rows(systems: dict[str, Any], sizes: Sizes) -> list[dict[str, Any]]:
    """Issue #16's figure: `/metrics` scraped after the engine's throughput run, against
    what the bench counted (a disagreement is a failed line, and a line on stderr). What
    counting costs is bench.flows.overhead's."""
    rows: list[dict[str, Any]] = []
    for name, found in systems.items():
        report = found.get("metrics") if isinstance(found, dict) else None
        if not report or not report["metrics_on"]:
            continue
        scraped, counted = report["scraped"], report["counted"]
        rows.append(
            {
                "workload": METRICS_COUNTS.format(sizes.preloaded),
                "system": name,
                "value": [scraped["completed"], scraped["events_applied"]],
                "target": "= the bench's counts",
                "met": report["agree"],
                "note": (
                    f"scraped {scraped['completed']:,} completed / {scraped['events_applied']:,} "
                    f"applied from {report['processes']} processes; the bench counted "
                    f"{counted['completed']:,} / {counted['events_applied']:,}"
                    + ("" if report["agree"] else " - DISAGREE")
                ),
            }
        )
    return rows


def publishing_rows(systems: dict[str, Any], sizes: Sizes) -> list[dict[str, Any]]:
    """Issue #17's figures: the publishing variant's throughput over the engine's, measured
    in the same run; its subscriber's lag and catch-up; the events each workflow published."""
    ours = systems.get(PUBLISHING_SYSTEM, {})
    rows: list[dict[str, Any]] = []
    with_it = ours.get("throughput", {}).get("per_second")
    without = systems.get("orchestrator", {}).get("throughput", {}).get("per_second")
    seen = ours.get("subscriber", {})
    per = seen.get("events_per_workflow")
    if with_it and without:
        note = f"{with_it:,.0f} / {without:,.0f} workflows/s"
        if per is not None:
            note += f", {per:g} events published per workflow, its subscriber running"
        rows.append(
            {
                "workload": PUBLISHING_RATIO.format(sizes.preloaded),
                "system": PUBLISHING_SYSTEM,
                "value": round(with_it / without, 3),
                "target": "figures only",  # one run each: judged by bench.flows.overhead
                "note": note,
            }
        )
    unread = ours.get("throughput_unread", {}).get("per_second")
    if unread and without:
        rows.append(
            {
                "workload": PUBLISHING_UNREAD.format(sizes.preloaded),
                "system": PUBLISHING_SYSTEM,
                "value": round(unread / without, 3),
                "target": "figures only",
                "note": (
                    f"{unread:,.0f} / {without:,.0f} workflows/s: the same workflow publishing "
                    "its business events and the engine's lifecycle ones "
                    "(ORCHESTRATOR_PUBLISH_LIFECYCLE=1), nothing reading them"
                ),
            }
        )
    if "error" in seen:
        rows.append(
            {
                "workload": PUBLISHING_LAG,
                "system": PUBLISHING_SYSTEM,
                "value": None,
                "note": f"subscriber: {seen['error']}",
            }
        )
    elif seen:
        rows += _subscriber_rows(seen)
    return rows


def _subscriber_rows(seen: dict[str, Any]) -> list[dict[str, Any]]:
    delay = seen["delay_ms"]
    if seen["caught_up"]:
        caught: Any = seen["caught_up_seconds"]
        when = (
            f"all {seen['published']:,} consumed {caught:g} s after it, the last written "
            f"{seen['last_written_after_seconds']:g} s after it"
        )
    else:
        caught = f"> {seen['catch_up_limit']:g}"
        when = f"{seen['unconsumed']:,} of {seen['published']:,} still unconsumed {caught} s on"
    lag_note = (
        f"{seen['lag_at_last_finish']:,} of the {seen['published_by_last_finish']:,} events "
        f"published by the last finish not yet consumed then; {when}; from an event's write "
        f"to the subscriber's loop p50 {delay['p50']} ms, p99 {delay['p99']} ms, max "
        f"{delay['max']} ms; the subscriber's loop used {seen['cpu_seconds']:g} s of CPU; its "
        f"round trips ({seen['round_trips_per_event'] or '-'} per event: an XREADGROUP per "
        "batch, an XACK per partition and batch) are left out of the engine's"
    )
    workflows = seen["workflows"]
    expected = seen["expected_per_workflow"]
    exact = (
        seen["published"] == seen["consumed"] == seen["distinct_ids"] == expected * workflows
        and seen["instances"] == workflows
    )
    types = ", ".join(f"{kind} {count:,}" for kind, count in seen["by_type"].items())
    return [
        {
            "workload": PUBLISHING_LAG,
            "system": PUBLISHING_SYSTEM,
            "value": [seen["lag_at_last_finish"], caught],
            "note": lag_note,
        },
        {
            "workload": PUBLISHING_EVENTS,
            "system": PUBLISHING_SYSTEM,
            "value": [
                seen["events_per_workflow"],
                round(seen["consumed"] / workflows, 3) if workflows else None,
            ],
            "target": (
                f"{expected} ({seen['business_per_workflow']} business"
                + (f" + {n} lifecycle" if (n := seen["lifecycle_per_workflow"]) else "")
                + "), each consumed once"
            ),
            "met": exact,
            "note": (
                f"{workflows:,} workflows; consumed {seen['consumed']:,} events, "
                f"{seen['distinct_ids']:,} distinct ids, of {seen['instances']:,} instances: "
                f"{types}"
            ),
        },
    ]

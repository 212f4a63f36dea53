"""One run of the suite: each system in turn, each workload on its own private redis-server."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import platform
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from bench.flows import driver
from bench.flows.base import STRANDED_KEY, System
from bench.flows.driver import Sizes, WorkersDied, latency, throughput, warm_up
from bench.flows.trips import check_method
from support.redis_server import private_redis

# name -> (module, class, packages it needs)
SYSTEMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "orchestrator": ("bench.flows.orch", "OrchestratorSystem", ()),
    "orchestrator-job": ("bench.flows.orch", "OrchestratorForking", ()),
    "rq": ("bench.flows.rq_chain", "RqSystem", ()),
    "celery": ("bench.flows.celery_app", "CelerySystem", ("celery",)),
    "dramatiq": ("bench.flows.dramatiq_app", "DramatiqSystem", ("dramatiq",)),
}
THROUGHPUT = "3-step workflows/s, 2 workers, W={}"
LATENCY = "latency p50/p99 ms at {}/s"

FULL = Sizes()
QUICK = Sizes(preloaded=200, rates=((50, 2.0), (500, 0.5)), drain=5.0, drain_preloaded=20.0)


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
        for name in systems:
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
    return {"rows": rows, "details": details}

"""What the optional parts cost the flows row: the engine's 3-step throughput with and
without each, in paired rounds, same run.

A single throughput run of 1,000 workflows lasts well under a second here, and two runs
of the same engine one after the other differ by 20-30% on this shared machine: one run
of each variant cannot tell a 5% cost from noise. So each round runs every variant once,
one after another (the order turned by one each round, so that none is always first),
each on a private redis-server with its own workers; a variant's cost in a round is its
throughput over the reference's in that round, and the figure is the median over the
rounds.

    reference   the engine as it runs by default: metrics on, tracing off, no publishing
    metrics off ORCHESTRATOR_METRICS=0 (issue #16: the reference over it >= 0.95)
    tracing     ORCHESTRATOR_TRACING=otlp to an OTLP/HTTP receiver in this process that
                takes and drops every export: every trace (OpenTelemetry's default sampler)
                and one in ten (OTEL_TRACES_SAMPLER=parentbased_traceidratio, 0.1); issue
                #16: each over the reference >= 0.85
    publishing  the workflow version that publishes a business event on entering each
                state, four a workflow, nothing reading them (issue #17: >= 0.90; the
                subscriber's keeping up is measured by the orchestrator-publishing run)
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from bench.flows.base import System
from bench.flows.driver import Sizes, WorkersDied, throughput
from bench.flows.orch import (
    OrchestratorMetricsOff,
    OrchestratorPublishingUnread,
    OrchestratorSystem,
)

OVERHEAD = "overhead:"  # the labels of these rows


class OrchestratorTracing(OrchestratorSystem):
    """The default worker tracing every step to an OTLP/HTTP endpoint (`endpoint`)."""

    name = "orchestrator-tracing"
    scraped_after_run = False
    endpoint = ""  # set by `receiver()` before the class is used

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        self.worker_env = {
            "ORCHESTRATOR_TRACING": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
        }
        self.workers_note += "; ORCHESTRATOR_TRACING=otlp"


class OrchestratorTracingSampled(OrchestratorTracing):
    """Tracing one trace in ten (OpenTelemetry's standard sampler variables): the others'
    spans are made but not recorded or exported."""

    name = "orchestrator-tracing-sampled"
    sampler: ClassVar[dict[str, str]] = {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    }

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        self.worker_env = {**self.worker_env, **self.sampler}
        self.workers_note += ", OTEL_TRACES_SAMPLER=parentbased_traceidratio (0.1)"


class OrchestratorPublishingOnly(OrchestratorPublishingUnread):
    """The workflow version that publishes its four business events; nothing reads them."""

    name = "orchestrator-publishing-only"
    worker_env: ClassVar[dict[str, str]] = {}


@dataclass(frozen=True)
class Variant:
    label: str  # the row's words
    system: type[System]
    target: float  # the least ratio met
    over_reference: bool  # the ratio: variant / reference (else reference / variant)


REFERENCE = OrchestratorSystem
VARIANTS = (
    Variant("metrics on / off (ORCHESTRATOR_METRICS=0)", OrchestratorMetricsOff, 0.95, False),
    Variant("tracing on (OTLP), 1 trace in 10 / off", OrchestratorTracingSampled, 0.85, True),
    Variant("tracing on (OTLP), every trace / off", OrchestratorTracing, 0.85, True),
    Variant("publishing 4 events a workflow / none", OrchestratorPublishingOnly, 0.90, True),
)


@contextmanager
def receiver() -> Iterator[str]:
    """An OTLP/HTTP endpoint on localhost that reads each export whole and answers 200."""

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def measure(workflows: int, rounds: int, folder: Path) -> dict[str, Any]:
    """Every variant's and the reference's workflows/s, round by round."""
    from bench.flows.run import fresh  # the run's own: a private redis-server each

    sizes = Sizes(preloaded=workflows)
    systems: list[type[System]] = [REFERENCE, *(v.system for v in VARIANTS)]
    found: dict[str, list[float | None]] = {s.name: [] for s in systems}
    with receiver() as endpoint:
        OrchestratorTracing.endpoint = endpoint
        for n in range(rounds):
            turn = n % len(systems)
            for system in systems[turn:] + systems[:turn]:
                try:
                    with fresh(system, folder / f"{system.name}-{n}") as (running, _):
                        part = throughput(running, sizes)
                except WorkersDied:
                    part = {}
                done = part.get("finished") == workflows
                found[system.name].append(part.get("per_second") if done else None)
    return {"workflows": workflows, "rounds": rounds, "per_second": found}


def rows(measured: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant: the median of its rounds' ratios, judged against its target."""
    per_second = measured["per_second"]
    reference = per_second[REFERENCE.name]
    out: list[dict[str, Any]] = []
    for variant in VARIANTS:
        ratios = []
        for ours, theirs in zip(per_second[variant.system.name], reference, strict=True):
            if ours and theirs:
                ratios.append(ours / theirs if variant.over_reference else theirs / ours)
        label = f"{OVERHEAD} {variant.label}, W={measured['workflows']:,}"
        if not ratios:
            out.append({"workload": label, "system": "orchestrator", "value": None, "met": False})
            continue
        median = statistics.median(ratios)
        out.append(
            {
                "workload": label,
                "system": "orchestrator",
                "value": round(median, 3),
                "target": f">= {variant.target:.2f}",
                "met": median >= variant.target,
                "note": (
                    f"median of {len(ratios)} paired rounds: "
                    + ", ".join(f"{r:.3f}" for r in ratios)
                    + "; workflows/s "
                    + ", ".join(f"{v:,.0f}" for v in per_second[variant.system.name] if v)
                    + " against "
                    + ", ".join(f"{v:,.0f}" for v in reference if v)
                ),
            }
        )
    return out

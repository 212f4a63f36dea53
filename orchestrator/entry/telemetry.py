"""A process's tracing set-up, from its settings: the sink of the engine's spans and its
exporter (orchestrator.runtime.spans.Batched, encoded by orchestrator.entry.otlp), the
tracer provider whose sampler decides and which carries a task's own spans, and the flush
before the process ends.

Why here, at each process's start-up: every process exports its own spans, tagged with
its own pid and role, so one trace shows which process did what. The applier, each
worker process, `orchestrator serve` and a CLI command call `setup` once they start; the
supervisor itself makes no spans. With ORCHESTRATOR_TRACING off (the default) `setup`
does nothing at all, and opentelemetry is not imported.

  otlp     spans batched to an OTLP/HTTP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, or
           OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, as the exporter reads them itself); the
           exporter is the optional `otlp` extra, loaded only here
  console  spans printed to standard output as JSON, for a look at them by hand

A process that ends must flush what is still batched (`shutdown`, or `flush`): the
workers' mains do so as they return, and RQ's forked work-horses (job isolation), which
leave with os._exit, flush after each job (orchestrator.entry.worker.JobWorker).
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from orchestrator.core.errors import ConfigurationError
from orchestrator.entry import otlp
from orchestrator.entry.settings import Settings
from orchestrator.runtime import spans, tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

FLUSH_MS = 5000  # what a flush waits for the exporter, at most
ROLE = "orchestrator.process.role"

_provider: tuple[int, TracerProvider] | None = None  # this process's (pid: a fork makes anew)


def preload(settings: Settings) -> None:
    """Import, in a process about to fork the workers (the supervisor), the modules that
    each worker's `setup` will use, so that they are imported once and inherited.

    Why: imported after the fork, the SDK, the OTLP exporter and its HTTP client (requests,
    urllib3) cost each child 0.15-0.45 s of CPU as it starts (py-spy, this 2-core machine),
    while the applier, up first, already applies: on a busy start the workers compete with
    their own start-up. Nothing is made here (no provider, exporter or connection: each
    process makes its own in `setup`); a missing exporter is left for `setup` to name."""
    if settings.tracing == "off":
        return
    names = ["opentelemetry.sdk.resources", "opentelemetry.sdk.trace.export"]
    if settings.tracing == "otlp":  # the exporter's HTTP client is imported as it is made
        names += ["opentelemetry.exporter.otlp.proto.http.trace_exporter", "requests"]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            return


def setup(settings: Settings, role: str) -> bool:
    """Trace in this process as `role` (applier, tasks, notifications, serve, cli) when
    the settings say so; returns whether tracing is on. Done once a process: again in
    the same process, it only says whether it is on."""
    global _provider
    if settings.tracing == "off":
        return False
    if _provider is not None and _provider[0] == os.getpid():
        return True
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": settings.service_name,
            "process.pid": os.getpid(),
            "host.name": socket.gethostname(),
            ROLE: role,
        }
    )
    provider = TracerProvider(resource=resource)  # samples, and sends a task's own spans
    provider.add_span_processor(BatchSpanProcessor(exporter(settings.tracing)))
    _provider = (os.getpid(), provider)
    if not _provider_set():  # a task's own spans (the OpenTelemetry API) nest in ours
        trace.set_tracer_provider(provider)
    send = otlp.sender(exporter(settings.tracing), resource)
    tracing.enable(spans.Batched(send, **batching(os.environ)), provider)
    atexit.register(shutdown)  # a plain process; forked ones call shutdown themselves
    return True


@contextmanager
def command(settings: Settings, name: str, parent: str | None = None) -> Iterator[None]:
    """A CLI command in a span `orchestrator <name>` (child of `parent`, a traceparent
    handed to the command, e.g. from a TRACEPARENT variable; else a new trace), its spans
    exported before it returns. With tracing off, nothing at all."""
    if not setup(settings, "cli"):
        yield
        return
    try:
        with tracing.span(f"orchestrator {name}", parent, kind="CLIENT"):
            yield
    finally:
        shutdown()


BATCHING = {  # OpenTelemetry's batch span processor variables, read as the SDK reads them
    "OTEL_BSP_SCHEDULE_DELAY": ("delay", spans.DELAY * 1000),  # ms
    "OTEL_BSP_MAX_QUEUE_SIZE": ("capacity", spans.CAPACITY),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": ("size", spans.SIZE),
}


def batching(environ: Mapping[str, str]) -> dict[str, Any]:
    """The engine's span batches sized by the OTEL_BSP_* variables that OpenTelemetry's
    BatchSpanProcessor reads; as the SDK does, a value that is not a positive integer is
    named in a warning and the default used (a worker process must not die of it)."""
    found: dict[str, Any] = {}
    for name, (argument, default) in BATCHING.items():
        given = environ.get(name, "").strip()
        value = int(given) if given.isdigit() else 0
        if given and value <= 0:
            log.warning("%s must be a positive integer, not %r: %s used", name, given, default)
        found[argument] = (value or default) / 1000 if argument == "delay" else value or default
    if found["size"] > found["capacity"]:
        log.warning(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE is over OTEL_BSP_MAX_QUEUE_SIZE: the latter used"
        )
        found["size"] = found["capacity"]
    return found


def exporter(mode: str) -> SpanExporter:
    """The exporter of a tracing mode; the OTLP one is loaded lazily, with the fix in the
    message when it is not installed."""
    if mode == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if mode != "otlp":
        raise ConfigurationError(f"ORCHESTRATOR_TRACING must be off, otlp or console, not {mode!r}")
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigurationError(
            "ORCHESTRATOR_TRACING=otlp needs the OTLP exporter: pip install 'orchestrator[otlp]' "
            "(opentelemetry-exporter-otlp-proto-http)"
        ) from None
    return OTLPSpanExporter()  # endpoint, headers, timeout: the standard OTEL_* variables


def _provider_set() -> bool:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    return isinstance(trace.get_tracer_provider(), TracerProvider)


def flush() -> None:
    """Export what this process has batched now: a work-horse, before it leaves, flushes
    the provider it was forked with (the SDK's batch processor starts anew in a fork)."""
    if _provider is not None:
        tracing.flush()
        _provider[1].force_flush(FLUSH_MS)


def shutdown() -> None:
    """Flush and stop this process's exporter; tracing is off here from then on."""
    global _provider
    if _provider is None or _provider[0] != os.getpid():
        return
    provider, _provider = _provider[1], None
    sink = tracing.disable()
    if sink is not None:
        sink.shutdown()
    provider.shutdown()

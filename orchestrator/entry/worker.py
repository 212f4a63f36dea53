"""Running the engine: the applier (with the timers) and RQ workers.

`run_burst` does everything in this process, round after round, until a
round finds nothing to do: every inbox applied, every queued job run, no
timer due. `Supervisor` runs one applier process and N RQ worker processes,
restarts any that dies, and stops them all on SIGINT or SIGTERM.

This is the workers' composition root: each worker process, at its start-up, builds
the job code's one per-process context (orchestrator.runtime.context: the channel
registry, from the channel settings) and installs it (`start_worker_process`).

The webhook relay (orchestrator.runtime.relay: published events POSTed to the
subscriptions' URLs) runs on a thread of the applier process (`start_relay`, which
says why), and at the end of a burst (`deliver_due`).
"""

from __future__ import annotations

import functools
import gc
import logging
import multiprocessing
import multiprocessing.process
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from rq import Queue, SimpleWorker, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

# Imported here, in the worker, rather than by RQ in each forked work-horse: a module first
# imported in a horse dies with it, so every job imported (and, with no .pyc written,
# compiled) the task entry points anew, some 3 ms and 650 copy-on-write page faults a job.
import orchestrator.runtime.tasks  # noqa: F401
from notifiers.registry import Notifiers
from orchestrator.entry import telemetry
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.rq_bookkeeping import OneTripHeartbeat, OneTripStart, OneTripSuccess
from orchestrator.entry.settings import Settings
from orchestrator.runtime import context, metrics
from orchestrator.runtime.context import WorkerContext
from orchestrator.runtime.dispatch import NOTIFICATION_QUEUE, TASK_QUEUE
from orchestrator.runtime.metrics import ProcessMetrics
from orchestrator.runtime.relay import Relay, RelayConfig
from orchestrator.store.keys import Keys
from orchestrator.store.metrics import MetricsStore
from orchestrator.store.subscriptions import SubscriptionStore

log = logging.getLogger("orchestrator.entry.worker")
QUEUES = (TASK_QUEUE, NOTIFICATION_QUEUE)
OVERRUN_GRACE = 5.0  # seconds past a job's own timeout before its process is ended
DEFAULT_JOB_TIMEOUT = 180  # RQ's, for a job that names none
# Seconds a stopping child has to finish: an idle one exits at once; a busy one finishes its
# job if it can (RQ's warm shutdown), else it is ended and the watchdog reports its try lost,
# to be tried again (a lost try is not counted against the task's retries; see core.machine).
STOP_GRACE = 1.0  # a busy job's time to finish once stopping; the rest of 2 s is for exits
STOP_COLD = 0.5  # seconds a cold shutdown has, before SIGKILL
RELAY_STOP = 0.5  # seconds the relay has, once the applier stopped, to give its leases back
RELAY_RESTART = 5.0  # seconds before a relay that failed (Redis down at its start) tries again


def channel_settings(settings: Settings) -> Mapping[str, str]:
    """The channels' settings, as read once at start-up (Settings.channels)."""
    if settings.channels:
        return settings.channels
    # Settings made in code (Settings(...), as tests and embedding scripts make theirs)
    # carry no channels: the environment, read once here at the process's start-up,
    # stands in for them, as Settings.from_env would have read it.
    return dict(os.environ)


def settle_heap() -> None:
    """Move what start-up built (modules, the registry, connections: some 60,000 objects)
    out of the garbage collector's sight (gc.freeze): they live as long as the process, and
    every full collection would walk them again. Measured on an applier in one process
    (bench.flows.flow3 against its publishing version, CPU a workflow): the publishing one's
    extra allocations set off full collections that cost it some 14% more; frozen, 3-9%."""
    gc.collect()
    gc.freeze()


def start_worker_process(app: App, again: bool = True) -> WorkerContext:
    """A worker process's start-up: build the job code's context from the settings and
    install it (orchestrator.runtime.context), the one thing this root installs. With
    `again` False, a context this process has already is kept (a burst after a burst)."""
    installed = context.installed()
    if installed is not None and not again and installed.installed_here():
        return installed
    channels = channel_settings(app.settings)
    threads = app.settings.notify_threads
    fresh = context.install(WorkerContext(Notifiers(channels), channels, threads))
    if installed is not None and installed.installed_here():
        installed.close()  # its connections are this process's own: not a forked parent's
    return fresh


def start_metrics(app: App) -> ProcessMetrics | None:
    """Count for `/metrics` in this process from now on, its counts written to Redis every
    few seconds (orchestrator.runtime.metrics); None, and nothing counted, with
    ORCHESTRATOR_METRICS=0. `metrics.uninstall()` writes them one last time."""
    if not app.settings.metrics:
        return None
    return metrics.install(MetricsStore(app.redis, Keys(app.settings.namespace)))


def _counted(target: Callable[[Settings], None], settings: Settings) -> None:
    """A supervised process's main, counting for `/metrics`; its counts are written once
    more as it ends (a child of multiprocessing runs no atexit handler)."""
    start_metrics(bootstrap(settings))
    try:
        target(settings)
    finally:
        metrics.uninstall()


class NoRemoteCommands:
    """An RQ worker that takes no remote commands (`rq`'s shutdown, kill-horse and stop-job,
    sent over pub/sub), so it opens no pub/sub thread.

    RQ starts that thread with a 60 s read timeout and, at teardown, stops it with
    redis-py's PubSubWorkerThread.stop, which joins it without a bound: a worker asked to
    stop sat up to a minute in its teardown, until the supervisor killed it. The engine
    needs none of these commands: its processes are stopped by signals (the supervisor's
    SIGTERM, Ctrl-C), a task past its deadline is ended by the supervisor, and RQ's
    suspension (`rq suspend`) is a key the worker reads, not a message."""

    def subscribe(self) -> None:
        pass

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """A job interrupted by a cold stop (a second SIGTERM while a job runs in the
        worker itself) is no error of the job's: one line, no traceback."""
        if exc_info and isinstance(exc_info[0], type) and issubclass(exc_info[0], SystemExit):
            log.warning("job %s interrupted: the worker is stopping; its try will be lost", job.id)
            return
        super().handle_exception(job, *exc_info)  # type: ignore[misc]


class BurstWorker(OneTripSuccess, OneTripHeartbeat, NoRemoteCommands, Worker):
    """An RQ worker for one burst (no pub/sub thread: it cost up to a second a burst)."""


class JobWorker(OneTripSuccess, OneTripHeartbeat, NoRemoteCommands, Worker):
    """Job isolation: RQ's forking worker, stopped by signals alone."""

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        """In the work-horse, which leaves with os._exit: its spans are flushed first."""
        try:
            return bool(super().perform_job(job, queue, execution))
        finally:
            telemetry.flush()


class NotificationWorker(
    OneTripStart, OneTripSuccess, OneTripHeartbeat, NoRemoteCommands, SimpleWorker
):
    """Notifications run in the worker process itself, stopped by signals alone."""


def rq_worker(app: App, burst: bool = False) -> Worker:
    """An RQ worker for this process's queues; the process's context is installed first,
    unless it has one (a burst after a burst)."""
    start_worker_process(app, again=False)
    queues = [
        Queue(name, connection=app.redis, serializer=JSONSerializer, job_class=app.job_class)
        for name in QUEUES
    ]
    kind = BurstWorker if burst else Worker
    return kind(queues, connection=app.redis, serializer=JSONSerializer, job_class=app.job_class)


def run_burst(app: App, timer_horizon: float = 5.0) -> int:
    """Apply and run until nothing is left to do now; returns the events applied.

    "Now" includes timers due within `timer_horizon` seconds (retry backoffs,
    short timeouts): the burst waits for those rather than strand them.
    """
    applier = app.applier()
    applier.leases.maintain(force=True)
    total = 0
    try:
        while True:
            applied = applier.drain()
            ran = rq_worker(app, burst=True).work(burst=True, logging_level="WARNING")
            total += applied
            if applied or ran:
                continue
            dues = [applier.timers.next_due(applier.leases.owned), applier.later.next_due()]
            due = min((d for d in dues if d is not None), default=None)
            wait = None if due is None else due - time.time()
            if wait is None or wait > timer_horizon:
                break
            time.sleep(min(max(wait, 0.0), 0.5) + 0.001)
    finally:
        applier.release()
    deliver_due(app, timer_horizon)
    return total


def relay_config(settings: Settings) -> RelayConfig:
    """The relay's settings, from the channels' (WEBHOOK_SUBSCRIPTION_*, WEBHOOK_ALLOW_PRIVATE)."""
    return RelayConfig.from_env(channel_settings(settings))


def deliver_due(app: App, horizon: float = 5.0) -> int:
    """A burst's webhook deliveries: what the subscriptions have due now, retries due
    within `horizon` seconds included; nothing at all when there is no subscription.
    Returns the events delivered."""
    if not SubscriptionStore(app.redis, app.keys).any():
        return 0
    relay = Relay(
        app.redis,
        app.keys,
        environ=os.environ,  # the secrets, by the names the subscriptions give
        config=relay_config(app.settings),
        crash_at=app.settings.crash_at,
    )
    delivered = relay.drain(horizon)
    if delivered:
        log.info("burst: %d webhook deliveries", delivered)
    return delivered


def _relay_thread(
    settings: Settings, relay_id: str, config: RelayConfig, stop: Callable[[], bool]
) -> None:
    while not stop():
        try:
            app = bootstrap(settings)  # its own connections: none shared with the applier
            relay = Relay(
                app.redis,
                app.keys,
                environ=os.environ,
                config=config,
                relay_id=relay_id,
                crash_at=settings.crash_at,
            )
            relay.run(stop)
            return
        except Exception as exc:  # Redis unreachable at its start, say: the applier goes on
            log.error(
                "relay: %s: %s; starting again in %gs", type(exc).__name__, exc, RELAY_RESTART
            )
            deadline = time.monotonic() + RELAY_RESTART
            while not stop() and time.monotonic() < deadline:
                time.sleep(0.1)


def start_relay(
    settings: Settings, relay_id: str, config: RelayConfig, stopping: Callable[[], bool]
) -> Callable[[], None]:
    """Start the webhook relay on a thread of this process; returns what stops it.

    Why a thread of the applier process rather than a process of its own: a worker
    always has exactly one applier, so every worker runs one relay and no more, started
    and stopped with it (SIGINT or SIGTERM stop both, the relay within RELAY_STOP), and
    restarted with it when it dies (same relay id: it takes its leases back at once);
    an idle relay costs a look at the subscriptions hash a second and no process, and a
    worker's processes stay the ones its operators know. A slow receiver cannot slow the
    applier: the relay and each subscription's deliveries run on threads of their own,
    waiting on sockets (which hold no lock the applier needs) with a deadline per
    request, on Redis connections of their own; the applier never waits for them. The
    price is the interpreter lock: the relay's own work (signing, JSON) is taken from
    the applier's CPU, small beside a request's wait; a deployment that delivers
    thousands of webhooks a second would want the relay in a process of its own.
    """
    done = threading.Event()

    def stop_now() -> bool:
        return done.is_set() or stopping()

    thread = threading.Thread(
        target=_relay_thread, args=(settings, relay_id, config, stop_now), name="relay"
    )
    thread.daemon = True  # a request in flight never holds the process's exit
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(RELAY_STOP)

    return stop


def _applier_main(
    settings: Settings, relay_id: str | None = None, relay: RelayConfig | None = None
) -> None:
    app = bootstrap(settings)
    telemetry.setup(settings, "applier")
    stopping = _stop_flag()
    applier = app.applier()
    settle_heap()
    log.info("applier %s started", applier.id)
    stop_relay = None if relay is None else start_relay(settings, relay_id or "", relay, stopping)
    try:
        applier.run(stopping)
    finally:
        if stop_relay is not None:
            stop_relay()
        telemetry.shutdown()  # a forked process runs no atexit: its spans are flushed here


ISOLATIONS = ("job", "process")


class DeadlineWorker(
    OneTripStart, OneTripSuccess, OneTripHeartbeat, NoRemoteCommands, SimpleWorker
):
    """Runs jobs in this process and tells the supervisor by when each must be done.

    A task past its timeout gets RQ's JobTimeoutException; one that swallows it, or that
    sits in a C call which never returns to Python, would hold this worker for ever. With
    job isolation RQ's worker kills such a work-horse; here the supervisor ends the whole
    worker (and starts it again) once `deadline` (shared memory, a Unix time; 0 while
    idle) is passed, and the watchdog reports the task lost: its heartbeat stopped.
    """

    deadline: Any = None  # a multiprocessing Value("d"), set by _task_worker_main

    def execute_job(self, job: Job, queue: Queue) -> None:
        if self.deadline is None:  # nobody watching
            super().execute_job(job, queue)
            return
        timeout = job.timeout if job.timeout and job.timeout > 0 else DEFAULT_JOB_TIMEOUT
        self.deadline.value = time.time() + timeout + OVERRUN_GRACE
        try:
            super().execute_job(job, queue)
        finally:
            self.deadline.value = 0.0


def _task_worker_main(settings: Settings, isolation: str = "process", deadline: Any = None) -> None:
    """With isolation "job", each job runs in a work-horse forked for it (RQ's Worker): a
    crash or a leak in user code ends with the job, at the price of a fork per job. With
    "process", jobs run in this process (RQ's SimpleWorker), as Celery's and Dramatiq's
    workers run theirs: no fork, so a step costs a few milliseconds less; a task that
    kills its process takes this worker down, the supervisor starts it again and the
    watchdog reports the task lost, as after the out-of-memory killer."""
    app = bootstrap(settings)
    start_worker_process(app)
    telemetry.setup(settings, "tasks")
    queue = Queue(
        TASK_QUEUE, connection=app.redis, serializer=JSONSerializer, job_class=app.job_class
    )
    options: dict[str, Any] = {"serializer": JSONSerializer, "job_class": app.job_class}
    settle_heap()
    try:
        if isolation == "job":
            JobWorker([queue], connection=app.redis, **options).work(logging_level="WARNING")
            return
        worker = DeadlineWorker([queue], connection=app.redis, **options)
        worker.deadline = deadline
        worker.work(logging_level="WARNING")
    finally:
        telemetry.shutdown()


def _notification_worker_main(settings: Settings) -> None:
    """Notifications run in the worker process itself, so SMTP connections and HTTP
    sessions live from one send to the next (our code, not the user's)."""
    app = bootstrap(settings)
    start_worker_process(app)
    telemetry.setup(settings, "notifications")
    queue = Queue(
        NOTIFICATION_QUEUE, connection=app.redis, serializer=JSONSerializer, job_class=app.job_class
    )
    settle_heap()
    try:
        NotificationWorker(
            [queue], connection=app.redis, serializer=JSONSerializer, job_class=app.job_class
        ).work(logging_level="WARNING")
    finally:
        telemetry.shutdown()


def _stop_flag() -> Callable[[], bool]:
    stopped = False

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return lambda: stopped


class Supervisor:
    """One applier (with the webhook relay on a thread, unless `relay` is False),
    `processes` task workers and `notifiers` notification workers."""

    def __init__(
        self,
        settings: Settings,
        processes: int = 2,
        notifiers: int = 1,
        isolation: str = "process",
        relay: bool = True,
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, not {isolation!r}")
        self.settings = settings
        self.context = multiprocessing.get_context("fork")
        # read now, so that a bad WEBHOOK_SUBSCRIPTION_* is refused before anything starts;
        # one relay id for the supervisor's life: a restarted applier's relay is the same
        relay_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        applier = functools.partial(
            _applier_main, relay_id=relay_id, relay=relay_config(settings) if relay else None
        )
        self.roles: dict[str, Callable[[Settings], None]] = {"applier": applier}
        self.deadlines: dict[str, Any] = {}  # task worker -> its job's deadline (process)
        for index in range(processes):
            name = f"tasks-{index}"
            if isolation == "process":
                self.deadlines[name] = self.context.Value("d", 0.0, lock=False)
            self.roles[name] = functools.partial(
                _task_worker_main, isolation=isolation, deadline=self.deadlines.get(name)
            )
        for index in range(notifiers):
            self.roles[f"notifications-{index}"] = _notification_worker_main
        self.children: dict[str, multiprocessing.process.BaseProcess] = {}
        self.started: dict[str, float] = {}

    def run(self) -> None:
        stopping = _stop_flag()
        telemetry.preload(self.settings)  # imported once, before the children fork
        for name, target in self.roles.items():
            self._spawn(name, target)
        failures: dict[str, int] = {}
        restart_at: dict[str, float] = {}
        try:
            while not stopping():
                now = time.monotonic()
                for name, child in list(self.children.items()):
                    self._end_if_overrun(name, child)
                    if child.is_alive():
                        if now - self.started[name] > 30:
                            failures[name] = 0  # it has run a while: a fresh start next time
                        continue
                    if name not in restart_at:  # back off while it keeps dying (Redis down?)
                        failures[name] = failures.get(name, 0) + 1
                        delay = min(5.0, 0.1 * 2 ** (failures[name] - 1))
                        restart_at[name] = now + delay
                        log.warning(
                            "%s exited with %s; restarting it in %.1fs", name, child.exitcode, delay
                        )
                    if now >= restart_at[name]:
                        del restart_at[name]
                        self._spawn(name, self.roles[name])
                time.sleep(0.1)
        finally:
            self.stop()

    def _end_if_overrun(self, name: str, child: multiprocessing.process.BaseProcess) -> None:
        """A task worker still in a job past its deadline: kill it (see DeadlineWorker)."""
        deadline = self.deadlines.get(name)
        if deadline is None or not 0 < deadline.value < time.time() or not child.is_alive():
            return
        log.warning(
            "%s is %.1fs past its job's deadline (a task ignoring its timeout?); ending it",
            name,
            time.time() - deadline.value + OVERRUN_GRACE,
        )
        child.kill()
        child.join(5)
        deadline.value = 0.0

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop every child within about `grace` + STOP_COLD seconds, in three steps.

        SIGTERM: an idle child exits at once; a busy RQ worker finishes its job (RQ's warm
        shutdown). Past `grace`, a second SIGTERM: RQ's cold shutdown, which kills a
        forked work-horse (job isolation) or interrupts a job run in the worker itself;
        the watchdog reports that try lost and the workflow's retry rules decide. Past
        STOP_COLD more, SIGKILL (a task that swallowed even that)."""
        alive = [c for c in self.children.values() if c.is_alive() and c.pid]
        for child in alive:
            child.terminate()
        for wait, ending in ((grace, "terminate"), (STOP_COLD, "kill")):
            deadline = time.monotonic() + wait
            for child in alive:
                child.join(max(0.0, deadline - time.monotonic()))
            alive = [c for c in alive if c.is_alive()]
            for child in alive:
                log.warning("%s still busy after %.1fs; ending it (%s)", child.name, wait, ending)
                getattr(child, ending)()
        for child in alive:
            child.join()

    def _spawn(self, name: str, target: Callable[[Settings], None]) -> None:
        child = self.context.Process(
            target=_counted, args=(target, self.settings), name=name, daemon=False
        )
        child.start()
        self.children[name] = child
        self.started[name] = time.monotonic()

"""The task entry points RQ workers run: one task (run_task), or several (run_tasks).

The wrapper runs a user's task and reports back with an event, whatever
happens: `task.completed` with the result, or `task.failed` with the error's
type, its base types, whether it may be retried (orchestrator.core.failures), its
message and its traceback (bounded: see `bounded_traceback`), and the worker logs
it at WARNING with that traceback. The engine decides about retries; RQ runs each try
once. While the task runs, `orchestrator.task_info()` tells it who it is
(orchestrator.runtime.taskinfo). The notification entry points are orchestrator.runtime.notify.jobs.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import redis
from rq import get_current_job
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.core.failures import failure_data
from orchestrator.core.limits import MAX_RESULT_BYTES, check_data
from orchestrator.runtime import metrics, tracing
from orchestrator.runtime.heartbeat import HEARTBEAT_EVERY, Heartbeat
from orchestrator.runtime.payloads import PackedTasks, TaskPayload, alive_of, inbox_of, keys_of
from orchestrator.runtime.taskinfo import TaskInfo, idempotency_key, running

log = logging.getLogger("orchestrator.runtime.tasks")
ANSWERS_WAIT = 0.02  # seconds the first answer of a packed job waits for others, at most
TRACEBACK_FRAMES = 20  # the innermost frames a failure's traceback keeps, at most
TRACEBACK_BYTES = 4096  # and the last bytes of its text, at most


def load_task(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    if not attr:
        module_name, _, attr = path.rpartition(".")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{path} is not callable")
    return target  # type: ignore[no-any-return]


def run_task(payload: TaskPayload) -> None:
    """One task in one RQ job: the light-load path, where a task waits for nobody."""
    job = get_current_job()
    assert job is not None, "orchestrator jobs run inside an RQ worker"
    beats = beats_of(payload)
    with Heartbeat(job.connection, beats, beats) as heartbeat:
        if heartbeat.gone:
            _not_run(payload)
            return
        run = _traced if tracing.enabled else _run_one  # one look a job (runtime.tracing)
        answer = run(payload, nullcontext())
        _send(job.connection, [(payload, answer)], heartbeat)
    metrics.job_done()  # a forked work-horse's counts, before it ends with the job


def run_tasks(payload: PackedTasks) -> None:
    """Several ready tasks in one RQ job, one after another: under load, RQ's own cost
    per job (5 round trips: orchestrator.entry.rq_bookkeeping) is paid once for all of them.

    Each task keeps what it has alone: its own deadline (an alarm around its call
    alone; RQ's timeout for the job is their sum), its own answer event, and its
    own heartbeat, kept alive from the start of the job so that the watchdog sees
    the tasks still waiting their turn as alive. Answers go out together, at the
    end or once the oldest has waited ANSWERS_WAIT: the applier then finds them
    together and packs the next steps as this job was packed, instead of taking
    them one by one. A job that dies part way loses no task: a task whose answer
    was not sent stops beating and the watchdog reports it lost (at least once).
    """
    job = get_current_job()
    assert job is not None, "orchestrator jobs run inside an RQ worker"
    items = payload["items"]
    run = _traced if tracing.enabled else _run_one  # one look a job (runtime.tracing)
    alive = packed_beats_of(payload)
    with (
        Heartbeat(job.connection, alive, alive) as heartbeat,
        _Answers(job.connection, heartbeat) as answers,
    ):
        for item in items:
            if heartbeat.gone and alive_of(item, item["job"]) in heartbeat.gone:
                _not_run(item)
                continue
            deadline = UnixSignalDeathPenalty(item["timeout"], JobTimeoutException)  # type: ignore[no-untyped-call]
            answers.add(item, run(item, deadline))
    metrics.job_done()  # a forked work-horse's counts, before it ends with the job


def beats_of(payload: TaskPayload) -> dict[str, tuple[str, str]]:
    """A task job's heartbeat key, and where its try is registered as outstanding."""
    return {alive_of(payload, payload["job"]): registered(payload)}


def packed_beats_of(payload: PackedTasks) -> dict[str, tuple[str, str]]:
    """Each packed task's heartbeat key, and where its try is registered as outstanding."""
    return {alive_of(item, item["job"]): registered(item) for item in payload["items"]}


def registered(payload: TaskPayload) -> tuple[str, str]:
    """Where the try is registered as outstanding until it answers (hash, field)."""
    return keys_of(payload).outstanding_jobs(payload["partition"]), payload["job"]


def _not_run(payload: TaskPayload) -> None:
    """A try the watchdog reported lost before it started (its worker was paused past its
    heartbeat's life): the engine has moved on with the retry rules, so it is not run."""
    log.warning(
        "%s %s of %s (%s) try %d was reported lost before it started: not run",
        payload["kind"],
        payload["task"],
        payload["instance"],
        payload["workflow"],
        payload["attempt"],
        extra=log_fields(payload),
    )


def _traced(payload: TaskPayload, deadline: AbstractContextManager[Any]) -> Event:
    """`_run_one` in a span `task <name>`, child of the job's trace; its answer carries
    the span's context, so the apply of the answer is its child."""
    attributes = {
        tracing.INSTANCE: payload["instance"],
        tracing.WORKFLOW: payload["workflow"],
        tracing.STATE: payload["state"],
        tracing.TASK: payload["task"],
        tracing.KIND: payload["kind"],
        tracing.ATTEMPT: payload["attempt"],
    }
    short = payload["task"].rpartition(":")[2].rpartition(".")[2]  # module:attr -> attr
    name = f"{payload['kind']} {short}"
    with tracing.span(name, payload.get("trace"), attributes, "CONSUMER") as span:
        answer = _run_one(payload, deadline, tracing.traceparent_of(span))
        if answer.type in ev.FAILURES:
            tracing.failed(span, str(answer.data.get("error_type")), answer.data["message"])
    return answer


def _run_one(
    payload: TaskPayload, deadline: AbstractContextManager[Any], trace: str | None = None
) -> Event:
    """Run one task; its answer: completed with the result, or failed with the error
    (carrying `trace`, the task span's context, when tracing is on)."""
    kind = payload["kind"]
    done, failed = (
        (ev.COMPENSATION_COMPLETED, ev.COMPENSATION_FAILED)
        if kind == "compensation"
        else (ev.TASK_COMPLETED, ev.TASK_FAILED)
    )
    answer: dict[str, Any] = {
        "task": payload["task"],
        "state": payload["state"],
        "attempt": payload["attempt"],
        "entered_seq": payload["entered_seq"],
        "job": payload["job"],
    }
    counts = metrics.current()  # None with ORCHESTRATOR_METRICS=0
    began = time.perf_counter() if counts is not None else 0.0
    try:
        with deadline, running(_info(payload)):
            result = load_task(payload["task"])(dict(payload["context"]))
        check_data(result, "the task's result", MAX_RESULT_BYTES)  # fail the task, not the engine
    except Exception as exc:  # every failure of user code becomes an event (a timeout too)
        trace_text = bounded_traceback(exc)
        log.warning(
            "%s %s of %s (%s) in state %s, try %d, failed: %s: %s\n%s",
            "compensation" if kind == "compensation" else "task",
            payload["task"],
            payload["instance"],
            payload["workflow"],
            payload["state"],
            payload["attempt"],
            type(exc).__name__,
            exc,
            trace_text.rstrip("\n"),
            extra={**log_fields(payload), "traceback": trace_text},
        )
        error = {**failure_data(exc), "message": str(exc), "traceback": trace_text}
        if counts is not None:
            counts.task_finished(
                payload["task"], kind, time.perf_counter() - began, type(exc).__name__
            )
        return _event(payload, failed, {**answer, **error}, trace)
    if counts is not None:
        counts.task_finished(payload["task"], kind, time.perf_counter() - began)
    return _event(payload, done, {**answer, "result": result}, trace)


def bounded_traceback(exc: BaseException) -> str:
    """The error's traceback as Python prints it, bounded: its innermost TRACEBACK_FRAMES
    frames that fit in TRACEBACK_BYTES with the error's line (itself cut to a quarter of
    that). File names, line numbers and source lines only: never a frame's local
    variables, where secrets would be."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code is _run_one.__code__:
        tb = tb.tb_next  # the wrapper's own frame says nothing about the task
    frames = traceback.format_list(traceback.extract_tb(tb)[-TRACEBACK_FRAMES:])
    last = _clip("".join(traceback.format_exception_only(type(exc), exc)), TRACEBACK_BYTES // 4)
    head, cut = "Traceback (most recent call last):\n", "  ...\n"
    budget = TRACEBACK_BYTES - len(head) - len(cut) - len(last.encode())
    kept: list[str] = []
    for frame in reversed(frames):
        budget -= len(frame.encode())
        if budget < 0:
            break
        kept.append(frame)
    skipped = len(kept) < len(traceback.extract_tb(tb))
    return head + (cut if skipped else "") + "".join(reversed(kept)) + last


def _clip(text: str, limit: int) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[: limit - 4].decode("utf-8", "ignore") + "...\n"


def log_fields(payload: TaskPayload) -> dict[str, Any]:
    """What a log record says about the try it is about (`--log-format json` shows them)."""
    return {
        "instance_id": payload["instance"],
        "workflow": payload["workflow"],
        "state": payload["state"],
        "task": payload["task"],
        "attempt": payload["attempt"],
    }


def _info(payload: TaskPayload) -> TaskInfo:
    """What task_info() returns inside this try (every field is in the checked payload)."""
    kind = payload["kind"]
    return TaskInfo(
        instance_id=payload["instance"],
        workflow=payload["workflow"],
        version=payload["version"],
        state=payload["state"],
        kind=kind,
        attempt=payload["attempt"],
        idempotency_key=idempotency_key(
            payload["instance"], payload["state"], payload["entered_seq"], kind
        ),
    )


def _event(payload: TaskPayload, event_type: str, data: dict[str, Any], trace: str | None) -> Event:
    return Event(
        id=f"{payload['job']}-{event_type}",
        type=event_type,
        instance_id=payload["instance"],
        at=time.time(),
        data=data,
        trace=trace,
    )


def _send(
    connection: redis.Redis,
    answers: list[tuple[TaskPayload, Event]],
    heartbeat: Heartbeat,
) -> None:
    """Tasks' answers, in one round trip. Their heartbeats stop beating but are not
    deleted: each expires within HEARTBEAT_TTL, and while it lasts it only tells the
    watchdog what the answer already says (a DEL a task would be a command a step)."""
    pipe = connection.pipeline(transaction=False)
    for payload, event in answers:
        pipe.xadd(inbox_of(payload), {"e": event.to_json()})
    pipe.execute()
    for payload, _ in answers:
        heartbeat.stop(alive_of(payload, payload["job"]))


class _Answers:
    """A packed job's answers, sent together once the oldest has waited ANSWERS_WAIT
    (the process's answering thread sends them even while a slow task runs), and the
    rest at the end."""

    def __init__(self, connection: redis.Redis, heartbeat: Heartbeat) -> None:
        self.redis = connection
        self.heartbeat = heartbeat
        self.waiting: list[tuple[TaskPayload, Event]] = []
        self.oldest = 0.0
        self.lock = threading.Lock()

    def __enter__(self) -> _Answers:
        _late.watch(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _late.unwatch(self)
        self.flush()  # after a late send under way (the lock): nothing is sent twice

    def add(self, payload: TaskPayload, event: Event) -> None:
        with self.lock:
            if not self.waiting:
                self.oldest = time.monotonic()
            self.waiting.append((payload, event))

    def flush(self) -> None:
        with self.lock:
            if not self.waiting:
                return
            _send(self.redis, self.waiting, self.heartbeat)  # kept for another try if it fails:
            self.waiting = []  # a copy that did get through is a duplicate event id, ignored

    def flush_if_late(self) -> None:
        if self.waiting and time.monotonic() - self.oldest >= ANSWERS_WAIT:
            try:
                self.flush()
            except Exception:  # sent again later or at the end; a task must not die of it
                log.warning("sending answers failed", exc_info=True)
                self.oldest = time.monotonic() + HEARTBEAT_EVERY  # not again at once


class _LateAnswers:
    """The process's answering thread: every ANSWERS_WAIT / 2 while packed jobs run, the
    answers that waited long enough; asleep while none runs. One a process rather than
    one started and joined for each packed job (as the heartbeats,
    orchestrator.runtime.heartbeat); a forked work-horse starts its own."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[_Answers] = set()
        self.wake = threading.Event()
        self.pid = 0  # the process whose thread this is

    def watch(self, answers: _Answers) -> None:
        with self.lock:
            self.running.add(answers)
            if self.pid != os.getpid():
                self.pid = os.getpid()
                threading.Thread(target=self._run, name="answers", daemon=True).start()
        self.wake.set()

    def unwatch(self, answers: _Answers) -> None:
        with self.lock:
            self.running.discard(answers)

    def _run(self) -> None:
        while True:
            self.wake.wait()
            time.sleep(ANSWERS_WAIT / 2)
            with self.lock:
                running = list(self.running)
                if not running:  # under the lock: a job watched after this sets it again
                    self.wake.clear()
            for answers in running:
                answers.flush_if_late()

    def after_fork(self) -> None:
        """In a forked child: the parent's thread is not here, nor its jobs."""
        self.lock = threading.Lock()
        self.running = set()
        self.wake = threading.Event()
        self.pid = 0


_late = _LateAnswers()
os.register_at_fork(after_in_child=_late.after_fork)

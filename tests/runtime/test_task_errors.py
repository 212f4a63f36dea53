"""Errors that say whether to retry and are routed by type; a task that knows who it is.

First the pure core (definition and transition function, no Redis), then the task
wrapper alone, then whole runs: a real Redis, the applier and RQ workers
(`run_burst`), with the workflows of tests/error_workflows.py.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

import orchestrator
from orchestrator import On, State, Task, TaskInfo, Workflow, task_info
from orchestrator.core import events as ev
from orchestrator.core.definition import Definition
from orchestrator.core.effects import RunTask, StartTimer
from orchestrator.core.errors import DefinitionError
from orchestrator.core.events import Event
from orchestrator.core.graph import mermaid
from orchestrator.core.instance import Instance
from orchestrator.core.machine import Result, transition
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.entry.worker import run_burst
from orchestrator.runtime import tasks as jobs
from orchestrator.runtime.taskinfo import idempotency_key
from orchestrator.runtime.watchdog import CHECK_EVERY, INTERMEDIATE
from tests.error_workflows import (
    CardExpired,
    FraudSuspected,
    Identified,
    Payment,
    PaymentDeclined,
    charge,
    identify,
)

IID = "inst-errors"
T0 = 1_000.0


# ---- driving the pure transition function by hand ---------------------------


class Run:
    """One instance, event by event, one second apart."""

    def __init__(self, workflow: type[Workflow], input: dict[str, Any] | None = None) -> None:
        self.d: Definition = workflow.definition
        self.at = T0
        self.inst = Instance(id=IID, workflow=self.d.name, version=self.d.version, created_at=T0)
        self.results: list[Result] = []
        self.send(ev.STARTED, {"input": input or {}})

    def send(self, type_: str, data: dict[str, Any]) -> Result:
        self.at += 1
        result = transition(
            self.d, self.inst, Event(f"{type_}@{self.at}", type_, IID, self.at, data)
        )
        self.inst = result.instance
        self.results.append(result)
        return result

    def fail(self, **error: Any) -> Result:
        """The worker reports the try the instance waits for as failed, with `error`."""
        kind = ev.COMPENSATION_FAILED if self.inst.status == "compensating" else ev.TASK_FAILED
        answer = {"attempt": self.inst.attempt, "entered_seq": self.inst.entered_seq}
        return self.send(kind, {**answer, "message": "boom", **error})

    def ok(self) -> Result:
        kind = (
            ev.COMPENSATION_COMPLETED if self.inst.status == "compensating" else ev.TASK_COMPLETED
        )
        answer = {"attempt": self.inst.attempt, "entered_seq": self.inst.entered_seq}
        return self.send(kind, {**answer, "result": None})

    def fire(self, timer: StartTimer) -> Result:
        self.at = max(self.at, timer.due)
        return self.send(timer.event_type, dict(timer.data))


def timers(result: Result) -> list[StartTimer]:
    return [e for e in result.effects if isinstance(e, StartTimer)]


def runs(result: Result) -> list[RunTask]:
    return [e for e in result.effects if isinstance(e, RunTask)]


DECLINED = {"error_type": "PaymentDeclined", "error_types": ["PaymentDeclined", "NonRetryable"]}


def test_a_non_retryable_failure_is_not_retried_and_takes_the_row_of_its_type() -> None:
    # Given a charge allowed 4 tries
    run = Run(Payment)
    assert run.inst.attempt == 1
    # When its first try fails with an error that says it is not retryable
    r = run.fail(**DECLINED, retryable=False)
    # Then no retry is armed and the row for that error type fires at once
    assert r.outcome == "transition"
    assert timers(r) == [] and runs(r) == []
    assert (r.instance.state, r.instance.status) == ("declined", "failed")


def test_a_base_class_name_matches_a_subclass_in_routing() -> None:
    run = Run(Payment)
    r = run.fail(
        error_type="CardExpired",
        error_types=["CardExpired", "PaymentDeclined", "NonRetryable"],
        retryable=False,
    )
    assert r.instance.state == "declined"


def test_a_type_the_task_names_non_retryable_is_not_retried_even_without_the_flag() -> None:
    # FraudSuspected is a plain Exception that the charging Task lists by name
    assert Payment.definition.states["charging"].task is not None
    assert Payment.definition.states["charging"].task.non_retryable == {"FraudSuspected"}
    run = Run(Payment)
    r = run.fail(error_type="FraudSuspected", error_types=["FraudSuspected"])
    assert (r.outcome, r.instance.state) == ("transition", "fraud")
    # and a failure reported by its type alone (no error_types) is matched by it too
    other = Run(Payment)
    assert other.fail(error_type="FraudSuspected").instance.state == "fraud"


def test_a_retryable_failure_is_retried_and_after_the_last_try_takes_the_catch_all_row() -> None:
    run = Run(Payment)
    for attempt in (1, 2, 3):
        r = run.fail(error_type="ConnectionError", error_types=["ConnectionError", "OSError"])
        assert r.outcome == "retry", r.note
        (timer,) = timers(r)
        r = run.fire(timer)
        assert [t.attempt for t in runs(r)] == [attempt + 1]
    r = run.fail(error_type="ConnectionError", error_types=["ConnectionError", "OSError"])
    assert (r.outcome, r.instance.state) == ("transition", "failed")


def test_a_lost_try_stays_retryable_and_its_retry_keeps_the_idempotency_key() -> None:
    # Given a task that names non-retryable types, and a try whose worker died
    run = Run(Identified)
    (first,) = runs(run.results[-1])
    r = run.fail(error_type="TaskLost", message="its worker died")
    # Then the lost try is retried, and the retry is the same step: same entry, same key
    assert r.outcome == "retry"
    (timer,) = timers(r)
    (second,) = runs(run.fire(timer))
    assert (first.attempt, second.attempt) == (1, 2)
    assert (second.state, second.kind, second.entered_seq) == (
        first.state,
        first.kind,
        first.entered_seq,
    )
    key = idempotency_key(IID, first.state, first.entered_seq, first.kind)
    assert key == idempotency_key(IID, second.state, second.entered_seq, second.kind)
    # And the next state's step has another key
    (third,) = runs(run.ok())
    assert idempotency_key(IID, third.state, third.entered_seq, third.kind) != key


def test_a_non_retryable_compensation_failure_fails_the_instance_at_once() -> None:
    run = Run(Identified)
    run.ok()  # first done: its compensation is on the stack
    r = run.fail(error_type="NonRetryable", error_types=["NonRetryable"], retryable=False)
    assert r.instance.status == "compensating"  # second failed (no retries): undo first
    r = run.fail(error_type="NonRetryable", error_types=["NonRetryable"], retryable=False)
    assert timers(r) == []
    assert (r.outcome, r.instance.status, r.instance.compensations) == (
        "failed",
        "failed",
        ("first",),
    )
    assert r.instance.reason == "compensation of state 'first' failed: NonRetryable: boom"


@pytest.mark.parametrize(
    "error",
    [
        {"error_types": "PaymentDeclined", "error_type": "RuntimeError"},  # not a list
        {"error_types": {"PaymentDeclined": 1}, "error_type": "RuntimeError"},
        {"error_types": [{"a": 1}, ["PaymentDeclined"], 3, None]},  # no names in the list
        {"error_types": None, "error_type": ["PaymentDeclined"]},  # unhashable error_type
        {"error_type": {"x": 1}, "retryable": "false"},  # only False says "not retryable"
        {},  # no error at all
        {"error_types": [], "error_type": 7, "retryable": None},
    ],
)
def test_malformed_error_data_counts_as_absent_and_the_try_is_retried(
    error: dict[str, Any],
) -> None:
    run = Run(Payment)
    r = run.fail(**error)
    assert r.outcome == "retry", r.note
    assert r.instance.state == "charging"


def test_malformed_error_types_fall_back_to_the_error_type_for_routing() -> None:
    run = Run(Payment)
    r = run.fail(error_types="junk", error_type="PaymentDeclined", retryable=False)
    assert r.instance.state == "declined"
    # names in a partly malformed list still count
    run = Run(Payment)
    r = run.fail(error_types=[1, "CardExpired", "PaymentDeclined"], retryable=False)
    assert r.instance.state == "declined"


def test_rows_are_tried_in_order_so_a_catch_all_first_shadows_specific_rows() -> None:
    class CatchAllFirst(Workflow):
        working = State(initial=True, task=charge)
        any_error = State(final=True, outcome="failed")
        declined = State(final=True, outcome="failed")
        transitions = [
            On("task.failed", source=working, target=any_error),
            On("task.failed", source=working, target=declined, error=PaymentDeclined),
        ]

    r = Run(CatchAllFirst).fail(**DECLINED, retryable=False)
    assert r.instance.state == "any_error"


def test_a_failure_no_error_row_matches_is_not_taken_by_those_rows() -> None:
    class OnlyDeclined(Workflow):
        working = State(initial=True, task=charge)
        declined = State(final=True, outcome="failed")
        other = State(final=True, outcome="failed")
        transitions = [
            On("task.failed", source=working, target=declined, error=("CardExpired", "X")),
            On("task.failed", source=working, target=other, error=[FraudSuspected, KeyError]),
            On("finish", source=working, target=other),
        ]

    assert OnlyDeclined.definition.transitions[0].errors == {"CardExpired", "X"}
    assert OnlyDeclined.definition.transitions[1].errors == {"FraudSuspected", "KeyError"}
    assert OnlyDeclined.definition.transitions[2].errors is None
    r = Run(OnlyDeclined).fail(**DECLINED, retryable=False)  # a PaymentDeclined, not a CardExpired
    assert r.instance.state == "working"  # neither row fires
    assert r.outcome != "transition"
    r = Run(OnlyDeclined).fail(error_type="KeyError", error_types=["KeyError", "LookupError"])
    assert r.instance.state == "other"


# ---- the definition ---------------------------------------------------------


def test_error_on_a_row_that_is_not_a_failure_is_refused_when_the_class_is_created() -> None:
    with pytest.raises(DefinitionError) as caught:

        class Misrouted(Workflow):
            working = State(initial=True, task=charge)
            done = State(final=True)
            transitions = [
                On("task.completed", source=working, target=done, error="PaymentDeclined")
            ]

    message = str(caught.value)
    assert "workflow Misrouted" in message
    assert "only task.failed and compensation.failed rows can route by error type" in message
    assert "'task.completed'" in message


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (Exception, "Exception would match nothing"),
        ("BaseException", "BaseException would match nothing"),
        ("payments.Declined", "is neither an exception class nor a class name"),
        (int, "is neither an exception class nor a class name"),
        ((), "names no error type"),
        (42, "must be an exception class, a class name or a list of them"),
    ],
)
def test_error_names_that_cannot_match_are_refused(error: Any, fault: str) -> None:
    with pytest.raises(DefinitionError, match="error") as caught:

        class Bad(Workflow):
            working = State(initial=True, task=charge)
            done = State(final=True)
            transitions = [On("task.failed", source=working, target=done, error=error)]

    assert fault in str(caught.value)


@pytest.mark.parametrize(
    ("non_retryable", "fault"),
    [
        (("TaskLost",), "a lost try (TaskLost: its worker died) is always retried"),
        ((Exception,), "Exception would match nothing"),
        (("not a name",), "is neither an exception class nor a class name"),
    ],
)
def test_non_retryable_names_that_cannot_work_are_refused(non_retryable: Any, fault: str) -> None:
    with pytest.raises(DefinitionError, match="state 'working': task: non_retryable") as caught:

        class Bad(Workflow):
            working = State(initial=True, task=Task(charge, non_retryable=non_retryable))
            done = State(final=True)
            transitions = [On("task.completed", source=working, target=done)]

    assert fault in str(caught.value)


def test_non_retryable_compiles_classes_and_names_into_a_set_of_names() -> None:
    class Named(Workflow):
        working = State(
            initial=True,
            task=Task(charge, non_retryable=(CardExpired, "FraudSuspected")),
            compensation=Task(identify, non_retryable=KeyError),
        )
        done = State(final=True)
        transitions = [On("task.completed", source=working, target=done)]

    state = Named.definition.states["working"]
    assert state.task is not None and state.compensation is not None
    assert state.task.non_retryable == frozenset({"CardExpired", "FraudSuspected"})
    assert state.compensation.non_retryable == frozenset({"KeyError"})


def test_the_graph_shows_the_error_types_a_row_routes() -> None:
    assert "task.failed (PaymentDeclined)" in mermaid(Payment.definition)


def test_the_public_api_exports_errors_and_task_info() -> None:
    assert {"NonRetryable", "TaskInfo", "task_info"} <= set(orchestrator.__all__)
    assert issubclass(PaymentDeclined, orchestrator.NonRetryable)


# ---- the task wrapper alone ---------------------------------------------------


def payload(task: str, context: dict[str, Any], **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "instance": "inst-7",
        "workflow": "errors_identified",
        "version": 2,
        "inbox": "unused",
        "task": task,
        "kind": "task",
        "state": "first",
        "attempt": 1,
        "entered_seq": 5,
        "context": context,
        "job": "job-1",
        "alive": "unused",
        "timeout": 10,
    }
    return {**base, **fields}


def test_the_wrapper_reports_the_error_types_and_whether_to_retry(tmp_path: Path) -> None:
    counter = str(tmp_path / "calls")
    charging = "tests.error_workflows:charge"
    expired = jobs._run_one(
        payload(charging, {"counter": counter, "outcome": "expired"}), nullcontext()
    )
    assert expired.type == ev.TASK_FAILED
    assert expired.data["error_type"] == "CardExpired"
    assert expired.data["error_types"] == ["CardExpired", "PaymentDeclined", "NonRetryable"]
    assert expired.data["retryable"] is False
    assert expired.data["message"] == "card expired"
    flaky = {"counter": counter, "outcome": "flaky", "fail_times": 99}
    network = jobs._run_one(payload(charging, flaky, kind="compensation"), nullcontext())
    assert network.type == ev.COMPENSATION_FAILED
    assert network.data["error_types"] == ["ConnectionError", "OSError"]
    assert "retryable" not in network.data
    json.dumps(network.data)  # JSON, as it travels


def test_task_info_inside_a_task_and_a_clear_error_outside(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="only available inside a running task"):
        task_info()
    infos = tmp_path / "infos"
    context = {"infos": str(infos), "failing_state": "first"}
    answer = jobs._run_one(payload("tests.error_workflows:identify", context), nullcontext())
    assert answer.data["error_type"] == "NonRetryable"  # it raised, after recording
    seen = TaskInfo(**json.loads(infos.read_text()))
    assert seen == TaskInfo(
        instance_id="inst-7",
        workflow="errors_identified",
        version=2,
        state="first",
        kind="task",
        attempt=1,
        idempotency_key="inst-7:first:5",
    )
    with pytest.raises(RuntimeError):  # the task is over, whatever became of it
        task_info()
    with pytest.raises(AttributeError):
        seen.attempt = 2  # type: ignore[misc]


# ---- whole runs: Redis, the applier and workers -------------------------------


@pytest.fixture
def app(redis_url: str, tmp_path: Path) -> App:
    settings = Settings(
        redis_url=redis_url, workflows=("tests.error_workflows",), partitions=4, data_dir=tmp_path
    )
    return bootstrap(settings)


def failures(app: App, iid: str) -> list[dict[str, Any]]:
    return [h for h in app.client.history(iid) if h["event"]["type"] == ev.TASK_FAILED]


def calls(path: Path) -> int:
    return int(path.read_text())


@pytest.mark.parametrize(
    ("outcome", "types", "state"),
    [
        ("declined", ["PaymentDeclined", "NonRetryable"], "declined"),  # a NonRetryable
        ("expired", ["CardExpired", "PaymentDeclined", "NonRetryable"], "declined"),  # by base
        ("fraud", ["FraudSuspected"], "fraud"),  # named non_retryable by the Task
    ],
)
def test_a_non_retryable_error_is_tried_once_and_routed_by_its_type(
    app: App, tmp_path: Path, outcome: str, types: list[str], state: str
) -> None:
    # Given a charge allowed 3 retries
    counter = tmp_path / "calls"
    iid = app.client.start("errors_payment", {"counter": str(counter), "outcome": outcome})
    # When its task raises an error that is not to be retried
    run_burst(app)
    # Then it was called once, and the instance took the row of that error's type
    assert calls(counter) == 1
    final = app.client.status(iid)
    assert (final.state, final.status) == (state, "failed")
    (failure,) = failures(app, iid)
    assert failure["outcome"] == "transition"
    assert failure["event"]["data"]["error_types"] == types
    assert failure["event"]["data"].get("retryable") is (False if outcome != "fraud" else None)
    assert app.client.replay(iid).matches


def test_a_retryable_error_still_gets_its_retries(app: App, tmp_path: Path) -> None:
    # A network error twice, then success: three calls, paid
    counter = tmp_path / "calls"
    iid = app.client.start(
        "errors_payment", {"counter": str(counter), "outcome": "flaky", "fail_times": 2}
    )
    # and one that always fails: four tries, then the catch-all row
    counter2 = tmp_path / "calls2"
    iid2 = app.client.start(
        "errors_payment", {"counter": str(counter2), "outcome": "flaky", "fail_times": 99}
    )
    run_burst(app)
    assert (calls(counter), app.client.status(iid).state) == (3, "paid")
    assert (calls(counter2), app.client.status(iid2).state) == (4, "failed")
    assert [h["outcome"] for h in failures(app, iid2)] == ["retry"] * 3 + ["transition"]


def test_malformed_error_data_reaching_the_applier_is_applied_as_a_retryable_error(
    app: App, tmp_path: Path
) -> None:
    # Given an instance waiting for try 1 of its charge (its job queued, not run)
    iid = app.client.start("errors_payment", {"counter": str(tmp_path / "calls")})
    applier = app.applier()
    applier.leases.maintain(force=True)
    applier.drain()
    inst = app.client.status(iid)
    # When a failure answer with malformed error fields arrives in its inbox
    forged = Event(
        "forged-1",
        ev.TASK_FAILED,
        iid,
        time.time(),
        {
            "attempt": inst.attempt,
            "entered_seq": inst.entered_seq,
            "error_type": ["PaymentDeclined"],
            "error_types": "PaymentDeclined",
            "retryable": "no",
            "message": "forged",
        },
    )
    app.redis.xadd(app.keys.inbox(app.keys.partition_of(iid)), {"e": forged.to_json()})
    applier.drain()
    applier.leases.release_all()
    # Then it is applied like any failure that may be retried: a retry is armed
    (failure,) = failures(app, iid)
    assert failure["outcome"] == "retry"
    assert app.client.status(iid).state == "charging"


def read_infos(path: Path) -> list[TaskInfo]:
    return [TaskInfo(**json.loads(line)) for line in path.read_text().splitlines()]


def test_a_flaky_task_sees_its_tries_and_one_key_and_another_state_another_key(
    app: App, tmp_path: Path
) -> None:
    infos = tmp_path / "infos"
    iid = app.client.start(
        "errors_identified", {"infos": str(infos), "flaky_state": "first", "fail_times": 2}
    )
    run_burst(app)
    assert app.client.status(iid).state == "done"
    seen = read_infos(infos)
    assert [(i.state, i.kind, i.attempt) for i in seen] == [
        ("first", "task", 1),
        ("first", "task", 2),
        ("first", "task", 3),
        ("second", "task", 1),
    ]
    assert {(i.instance_id, i.workflow, i.version) for i in seen} == {(iid, "errors_identified", 2)}
    first_keys = {i.idempotency_key for i in seen[:3]}
    assert len(first_keys) == 1
    (first_key,) = first_keys
    assert first_key.startswith(f"{iid}:first:")
    assert seen[3].idempotency_key != first_key
    assert seen[3].idempotency_key.startswith(f"{iid}:second:")


def test_a_compensation_has_its_own_key(app: App, tmp_path: Path) -> None:
    infos = tmp_path / "infos"
    iid = app.client.start("errors_identified", {"infos": str(infos), "failing_state": "second"})
    run_burst(app)
    assert app.client.status(iid).state == "undone"
    seen = read_infos(infos)
    assert [(i.state, i.kind, i.attempt) for i in seen] == [
        ("first", "task", 1),
        ("second", "task", 1),  # NonRetryable: once
        ("first", "compensation", 1),
    ]
    keys = [i.idempotency_key for i in seen]
    assert len(set(keys)) == 3
    assert keys[2].endswith(":compensation") and keys[2].startswith(f"{iid}:first:")


def test_a_try_run_again_after_its_worker_was_lost_has_the_same_key(
    app: App, tmp_path: Path
) -> None:
    # Given the first try of a step, which a worker took and ran but died before answering
    infos = tmp_path / "infos"
    iid = app.client.start("errors_identified", {"infos": str(infos)})
    applier = app.applier()
    applier.drain()
    (job,) = [j.decode() for j in app.redis.lrange("rq:queue:tasks", 0, -1)]
    app.redis.lmove("rq:queue:tasks", INTERMEDIATE[0], "LEFT", "RIGHT")
    taken = Job.fetch(job, connection=app.redis, serializer=JSONSerializer)
    jobs._run_one(taken.kwargs["payload"], nullcontext())  # ran; its answer never sent
    # When the watchdog reports the try lost and the engine retries it
    partitions = list(range(app.keys.partitions))
    watchdog = applier.dispatcher.watchdog
    outstanding = app.keys.outstanding(app.keys.partition_of(iid))
    app.redis.zadd(outstanding, {job: 0})
    assert watchdog.check(partitions, time.time()) == 0
    app.redis.set(app.keys.stranded(job), time.time() - CHECK_EVERY - 1)
    app.redis.zadd(outstanding, {job: 0})
    assert watchdog.check(partitions, time.time()) == 1
    applier.leases.release_all()
    run_burst(app)
    # Then the lost try was retried (TaskLost stays retryable though the task names
    # non-retryable types), and the try run again has the key the lost one had
    assert app.client.status(iid).state == "done"
    (lost,) = failures(app, iid)
    assert (lost["event"]["data"]["error_type"], lost["outcome"]) == ("TaskLost", "retry")
    seen = read_infos(infos)
    assert [(i.state, i.attempt) for i in seen] == [("first", 1), ("first", 2), ("second", 1)]
    assert seen[0].idempotency_key == seen[1].idempotency_key != seen[2].idempotency_key

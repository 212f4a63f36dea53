"""Jobs written straight into Redis run nothing but declared work.

Each forgery below is a job an attacker with write access to Redis could push:
other functions, the orchestrator's own entry points with a task or template
that no loaded workflow declares, payload fields of the wrong type, keys of
someone else's. Every one would leave a marker file or a message if it ran;
none may, each is refused with its reason, and the worker goes on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from orchestrator.entry.bootstrap import App
from orchestrator.entry.settings import Settings
from orchestrator.entry.worker import run_burst
from orchestrator.runtime.dispatch import (
    NOTIFICATION_QUEUE,
    RUN_TASK,
    RUN_TASKS,
    SEND_NOTIFICATION,
    SEND_NOTIFICATIONS,
    TASK_QUEUE,
    carrier_id,
)
from orchestrator.runtime.guard import RefusedJob
from orchestrator.runtime.payloads import seal

INSTANCE = "order-forged"
Payload = dict[str, Any]
Change = Callable[[Payload, str], None]  # (payload, marker path) -> None, in place


def task_payload(app: App, marker: str) -> Payload:
    """A run_task payload exactly as the dispatcher writes it for the order's first step."""
    partition = app.keys.partition_of(INSTANCE)
    job = f"{INSTANCE}-1-0"
    return {
        "instance": INSTANCE,
        "workflow": "order",
        "version": 1,
        "task": "workflows.order.tasks:reserve_stock",
        "kind": "task",
        "state": "reserving",
        "attempt": 1,
        "entered_seq": 1,
        "context": {"touch": 1, marker: 1},  # as subprocess.run's argument: touch MARKER
        "job": job,
        "timeout": 30,
        "namespace": app.keys.namespace,
        "partitions": app.keys.partitions,
        "partition": partition,
    }


def note_payload(app: App, marker: str) -> Payload:
    """A send_notification payload as the dispatcher writes it for a shipped order."""
    partition = app.keys.partition_of(INSTANCE)
    key = f"{INSTANCE}-4-0"
    return {
        "instance": INSTANCE,
        "workflow": "order",
        "version": 1,
        "channel": "email",
        "to": "attacker@example.com",
        "template": "order_shipped",
        "templates": "workflows.order",
        "urgent": True,
        "context": {"order_id": marker},
        "key": key,
        "kind": "notification",
        "partition": partition,
        "namespace": app.keys.namespace,
        "partitions": app.keys.partitions,
    }


def setter(field: str, value: object) -> Change:
    def change(payload: Payload, marker: str) -> None:
        payload[field] = value

    return change


def dropper(field: str) -> Change:
    def change(payload: Payload, marker: str) -> None:
        del payload[field]

    return change


SHELL_TASKS = [
    "subprocess:run",
    "subprocess:Popen",
    "subprocess:check_call",
    "subprocess.run",
    "os:system",
    "os:remove",
    "os:execvp",
    "shutil:rmtree",
    "builtins:exec",
    "builtins:eval",
    "pathlib:Path.touch",
    "importlib:import_module",
    "runpy:run_path",
    "pty:spawn",
    "tests.sample_workflows:boom",
    "workflows.order.tasks:refund_payment",  # declared, but as charging's compensation
    "workflows.order.tasks:_pause",
]

TASK_FORGERIES: list[tuple[str, Change, str]] = [
    *[
        (f"task={name}", setter("task", name), "is not the task that workflow")
        for name in SHELL_TASKS
    ],
    ("compensation of a state without one", setter("state", "shipping"), "is not the task"),
    (
        "declared compensation as a task",
        lambda p, m: p.update(task="workflows.order.tasks:release_stock"),
        "is not the task",
    ),
    (
        "declared task as a compensation",
        lambda p, m: p.update(kind="compensation"),
        "is not the compensation",
    ),
    ("unknown state", setter("state", "pwn"), "has no state 'pwn'"),
    ("final state", setter("state", "shipped"), "is not the task"),
    ("unknown workflow", setter("workflow", "evil"), "unknown workflow 'evil'"),
    ("unknown version", setter("version", 9), "version 9 is not loaded"),
    ("version as text", setter("version", "1"), "version: Input should be a valid integer"),
    ("instance not a string", setter("instance", 7), "instance: Input should be a valid string"),
    ("context a list", setter("context", ["touch", "x"]), "context: Input should be a valid"),
    ("attempt a bool", setter("attempt", True), "attempt: Input should be a valid integer"),
    ("timeout as text", setter("timeout", "30"), "timeout: Input should be a valid integer"),
    ("kind shell", setter("kind", "shell"), "kind: Input should be 'task' or 'compensation'"),
    ("extra field", setter("args", ["touch"]), "args: Extra inputs are not permitted"),
    ("task missing", dropper("task"), "task: Field required"),
    ("workflow missing", dropper("workflow"), "workflow: Field required"),
    ("keys of another namespace", setter("namespace", "other"), "namespace or partition count"),
    ("another partition count", setter("partitions", 99), "namespace or partition count"),
    ("wrong partition", lambda p, m: p.update(partition=p["partition"] + 1), "partition"),
    ("inbox of another key", setter("inbox", "orch:deadletters"), "inbox: Extra inputs"),
    ("job of another instance", setter("job", "other-1-0"), "is not one of instance"),
]

NOTE_FORGERIES: list[tuple[str, Change, str]] = [
    ("templates of os", setter("templates", "os"), "templates 'os' are not workflow 'order'"),
    (
        "templates of a module not loaded",
        setter("templates", "tests.sample_workflows"),
        "are not workflow 'order'",
    ),
    ("template path traversal", setter("template", "../../etc"), "is not a template name"),
    ("undeclared template", setter("template", "welcome"), "declares no email notification"),
    ("webhook not declared", setter("channel", "webhook"), "declares no webhook notification"),
    ("unknown channel", setter("channel", "shell"), "'shell' is not a notification channel"),
    ("another namespace", setter("namespace", "other"), "namespace or partition count"),
    ("another partition count", setter("partitions", 99), "namespace or partition count"),
    ("wrong partition", lambda p, m: p.update(partition=p["partition"] + 1), "partition"),
    ("no instance, key not cli", setter("instance", None), "has a cli- key"),
    (
        "no instance, templates not loaded",
        lambda p, m: p.update(instance=None, key="cli-x", templates="os"),
        "templates 'os' are no loaded workflow's",
    ),
    ("urgent as text", setter("urgent", "yes"), "urgent: Input should be a valid boolean"),
    ("context as text", setter("context", "{}"), "context: Input should be a valid dictionary"),
    ("workflow unknown", setter("workflow", "evil"), "unknown workflow 'evil'"),
    ("kind task", setter("kind", "task"), "kind: Input should be 'notification'"),
]


def enqueue(
    app: App, queue: str, func: str, kwargs: dict[str, Any], job_id: str, args: tuple[Any, ...] = ()
) -> str:
    """Push a job into a queue the way RQ itself would, as an attacker can."""
    job = Job.create(
        func,
        args=args,
        kwargs=kwargs,
        id=job_id,
        connection=app.redis,
        serializer=JSONSerializer,
        origin=queue,
    )
    Queue(queue, connection=app.redis, serializer=JSONSerializer).enqueue_job(job)
    return job.id


def refusal(app: App, queue: str, job_id: str) -> str:
    """The reason a job was refused for ('' if it was not refused)."""
    assert job_id in FailedJobRegistry(queue, connection=app.redis).get_job_ids(), job_id
    job = Job.fetch(job_id, connection=app.redis, serializer=JSONSerializer)
    result = job.latest_result()
    text = (result.exc_string or "") if result is not None else ""
    return text if "RefusedJob" in text else ""


def test_the_payloads_the_forgeries_start_from_are_accepted(app: App) -> None:
    # The forgeries below change one thing of payloads the guard accepts: they are
    # refused for that change, not for something else
    check = app.job_class.check
    assert check is not None
    task = task_payload(app, "m")
    note = note_payload(app, "m")
    for func, payload, job_id in [
        (RUN_TASK, task, task["job"]),
        (SEND_NOTIFICATION, note, note["key"]),
        (RUN_TASKS, {"items": [task]}, carrier_id([task["job"]])),
        (SEND_NOTIFICATIONS, {"items": [note]}, carrier_id([note["key"]])),
    ]:
        job = Job.create(
            func, kwargs={"payload": payload}, id=job_id, connection=app.redis,
            serializer=JSONSerializer,
        )  # fmt: skip
        check.check(job)


def test_forged_task_and_notification_jobs_run_nothing_and_say_why(
    app: App, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given forged jobs of every kind in both queues, each leaving a marker if it ran
    expected: dict[tuple[str, str], str] = {}
    markers: list[Path] = []
    for index, (_, change, reason) in enumerate(TASK_FORGERIES):
        marker = tmp_path / f"task-{index}"
        markers.append(marker)
        payload = task_payload(app, str(marker))
        change(payload, str(marker))
        job_id = enqueue(app, TASK_QUEUE, RUN_TASK, {"payload": payload}, f"forged-t{index}")
        expected[(TASK_QUEUE, job_id)] = reason
        # and the same forgery as one item of a packed job, beside a genuine-looking one
        good = task_payload(app, str(marker))
        pack = {"items": [good, payload]}
        pack_id = enqueue(app, TASK_QUEUE, RUN_TASKS, {"payload": pack}, f"forged-p{index}")
        expected[(TASK_QUEUE, pack_id)] = reason
    for index, (_, change, reason) in enumerate(NOTE_FORGERIES):
        payload = note_payload(app, f"FORGED-{index}")
        payload["key"] = f"{INSTANCE}-4-{index}"  # a job id of its own
        change(payload, "")
        job_id = enqueue(
            app, NOTIFICATION_QUEUE, SEND_NOTIFICATION, {"payload": payload}, str(payload["key"])
        )
        expected[(NOTIFICATION_QUEUE, job_id)] = reason
    # and forgeries of the job itself: other functions, other arguments
    marker = tmp_path / "func"
    markers.append(marker)
    task = task_payload(app, str(marker))
    for func, args, kwargs, reason in [
        ("os.system", (f"touch {marker}",), {}, "is not an orchestrator entry point"),
        ("subprocess.run", (["touch", str(marker)],), {}, "is not an orchestrator entry point"),
        (
            "orchestrator.runtime.tasks.load_task",
            ("subprocess:run",),
            {},
            "not an orchestrator entry",
        ),
        ("orchestrator.runtime.tasks._run_one", (), {"payload": task}, "not an orchestrator entry"),
        (
            "orchestrator.runtime.notify.batch.send_and_answer",
            (),
            {"payload": task},
            "not an orchestrator entry",
        ),
        (RUN_TASK + " ", (), {"payload": task}, "not an orchestrator entry point"),
        (RUN_TASK, (task,), {}, "takes one keyword argument, payload"),
        (RUN_TASK, (), {"payload": task, "shell": True}, "takes one keyword argument"),
        (RUN_TASK, (), {"payload": [task]}, "Input should be a valid dictionary"),
        (RUN_TASK, (), {"payload": task}, "is not its task's"),  # under another job id
        (RUN_TASKS, (), {"payload": {"items": []}}, "1 to 50 items"),
        (RUN_TASKS, (), {"payload": {"items": [task] * 51}}, "1 to 50 items"),
        (RUN_TASKS, (), {"payload": {"items": [task], "x": 1}}, "and nothing else"),
        (RUN_TASKS, (), {"payload": {"items": [task]}}, "does not match its items"),
        (SEND_NOTIFICATIONS, (), {"payload": {"items": "x"}}, "1 to 50 items in a list"),
    ]:
        job_id = enqueue(app, TASK_QUEUE, func, kwargs, f"forged-f{len(expected)}", args)
        expected[(TASK_QUEUE, job_id)] = reason
    assert len(expected) >= 50 + len(TASK_FORGERIES)
    # And a real order behind them
    order = app.client.start("order", {"order_id": "F1", "work_seconds": 0})
    # When the workers run everything
    run_burst(app)
    # Then nothing forged ran: no marker, no forged notification
    assert [m for m in markers if m.exists()] == []
    assert "FORGED-" not in capfd.readouterr().out
    # And each forged job is recorded as refused, with its reason
    wrong = {
        job_id: (reason, refusal(app, queue, job_id)[-300:])
        for (queue, job_id), reason in expected.items()
        if reason not in refusal(app, queue, job_id)
    }
    assert wrong == {}
    # And the worker went on: the real order finished
    assert app.client.status(order).state == "shipped"


@pytest.fixture
def sealed(settings: Settings) -> App:
    return App(replace(settings, job_key=b"k" * 32))


def test_with_a_job_key_workflows_run_and_unsealed_or_resealed_jobs_are_refused(
    sealed: App, tmp_path: Path
) -> None:
    app = sealed
    marker = tmp_path / "m"
    # Given a well-formed but unsealed job for a declared task
    payload = task_payload(app, str(marker))
    unsealed = enqueue(app, TASK_QUEUE, RUN_TASK, {"payload": payload}, payload["job"])
    # And a job sealed with another key, and one whose seal was made for another job
    other = copy.deepcopy(payload)
    other["job"] = other_id = f"{INSTANCE}-2-0"
    wrong_key = _sealed_job(app, other, other_id, b"x" * 32)
    third = copy.deepcopy(other)
    third["job"] = third_id = f"{INSTANCE}-3-0"
    moved = _sealed_job(app, third, third_id, b"k" * 32, seal_for=other_id)
    # And real orders, whose jobs the applier seals
    orders = [app.client.start("order", {"order_id": f"K{n}", "work_seconds": 0}) for n in range(3)]
    # When the workers run
    run_burst(app)
    # Then the orders ran to their end, and the three forgeries were refused for their seal
    assert [app.client.status(o).state for o in orders] == ["shipped"] * 3
    for job_id in (unsealed, wrong_key, moved):
        assert "its seal is missing or wrong" in refusal(app, TASK_QUEUE, job_id)
    assert not marker.exists()


def test_a_short_job_key_is_refused_at_start_up() -> None:
    from orchestrator.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="16 to 4096 characters"):
        Settings.from_env({"ORCHESTRATOR_JOB_KEY": "short"})
    assert Settings.from_env({"ORCHESTRATOR_JOB_KEY": "k" * 16}).job_key == b"k" * 16
    assert "k" * 16 not in repr(Settings.from_env({"ORCHESTRATOR_JOB_KEY": "k" * 16}))


def test_a_job_key_is_read_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "job-key"
    secret.write_text("s" * 20 + "\n")
    assert Settings.from_env({"ORCHESTRATOR_JOB_KEY_FILE": str(secret)}).job_key == b"s" * 20
    from orchestrator.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="cannot read"):
        Settings.from_env({"ORCHESTRATOR_JOB_KEY_FILE": str(tmp_path / "missing")})


def _sealed_job(
    app: App, payload: Payload, job_id: str, key: bytes, seal_for: str | None = None
) -> str:
    job = Job.create(
        RUN_TASK,
        kwargs={"payload": payload},
        id=job_id,
        connection=app.redis,
        serializer=JSONSerializer,
        origin=TASK_QUEUE,
    )
    job.meta["mac"] = seal(key, seal_for or job_id, job.data)
    Queue(TASK_QUEUE, connection=app.redis, serializer=JSONSerializer).enqueue_job(job)
    return job.id


def _store(app: App, payload: Payload) -> None:
    """A run_task job of `payload`, stored under its task's job id (not queued)."""
    Job.create(
        RUN_TASK,
        kwargs={"payload": payload},
        id=payload["job"],
        connection=app.redis,
        serializer=JSONSerializer,
        origin=TASK_QUEUE,
    ).save()


def test_a_job_is_checked_once_for_its_data_and_again_when_its_data_changes(
    app: App, tmp_path: Path
) -> None:
    # Given a genuine task job, in the worker's guarded job class
    payload = task_payload(app, str(tmp_path / "never"))
    job_id = payload["job"]
    _store(app, payload)
    job = app.job_class.fetch(job_id, connection=app.redis, serializer=JSONSerializer)
    checks = 0
    check = job.check
    assert check is not None

    class Counting(type(check)):  # type: ignore[misc]
        def check(self, job: Job) -> None:
            nonlocal checks
            checks += 1
            super().check(job)

    job.check = Counting(check.registry, check.keys, check.job_key)
    # When the worker admits it as it starts, and again as it runs: one check
    job.admit()
    job.admit()
    assert checks == 1
    # When its data is read anew and now orders an undeclared task
    _store(app, {**payload, "task": "subprocess:run"})
    job.refresh()
    # Then it is checked again, and refused
    with pytest.raises(RefusedJob, match="subprocess:run"):
        job.admit()
    assert checks == 2

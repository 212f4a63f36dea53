"""A job pushed straight into Redis that names anything but the orchestrator's
entry points is refused, logged and never run; the worker keeps working."""

from __future__ import annotations

from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from orchestrator.entry.bootstrap import App
from orchestrator.entry.worker import run_burst


@pytest.mark.parametrize(
    ("func", "args"),
    [
        ("os.system", ["touch {marker}"]),
        ("subprocess.run", [["touch", "{marker}"]]),
        ("builtins.exec", ["open({marker!r}, 'w').close()"]),
        ("pathlib.Path.touch", ["{marker}"]),
    ],
    ids=["os.system", "subprocess", "exec", "path"],
)
def test_foreign_functions_are_refused_and_never_run(
    app: App, tmp_path: Path, func: str, args: list[object]
) -> None:
    marker = str(tmp_path / "pwned")
    filled = [
        [a.format(marker=marker) for a in arg]
        if isinstance(arg, list)
        else str(arg).format(marker=marker)
        for arg in args
    ]
    # Given a job pushed into the tasks queue by someone with access to Redis
    queue = Queue("tasks", connection=app.redis, serializer=JSONSerializer)
    job = queue.enqueue(func, *filled)
    # And a real workflow waiting behind it
    order = app.client.start("order", {"order_id": "S1", "work_seconds": 0})
    run_burst(app)
    # Then the job was refused, with the reason, and never ran; the worker went on
    assert not Path(marker).exists()
    assert job.id in FailedJobRegistry("tasks", connection=app.redis).get_job_ids()
    result = Job.fetch(job.id, connection=app.redis, serializer=JSONSerializer).latest_result()
    assert result is not None
    assert "RefusedJob" in (result.exc_string or "")
    assert "is not an orchestrator entry point" in (result.exc_string or "")
    assert app.client.status(order).state == "shipped"


def test_a_pickle_payload_is_never_decoded(app: App, tmp_path: Path) -> None:
    import os

    marker = tmp_path / "pwned"
    # A job written with RQ's default serializer (pickle), as an attacker would
    job = Queue("notifications", connection=app.redis).enqueue(os.system, f"touch {marker}")
    order = app.client.start("order", {"order_id": "S2", "work_seconds": 0})
    run_burst(app)
    assert not marker.exists()
    assert job.id in FailedJobRegistry("notifications", connection=app.redis).get_job_ids()
    assert app.client.status(order).state == "shipped"

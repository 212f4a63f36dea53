"""Event payload schemas: rejected at the door naming the field; dead-lettered past it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.core.errors import SchemaViolation
from orchestrator.core.events import Event
from orchestrator.entry.bootstrap import App
from tests.conftest import cli_env, run_cli


def inbox_length(app: App) -> int:
    return sum(app.redis.xlen(app.keys.inbox(p)) for p in range(app.keys.partitions))


def test_bad_payload_is_rejected_at_emit_before_anything_is_written(
    app: App, tmp_path: Path
) -> None:
    iid = app.client.start("approval", {"request_id": "S1"})
    before = inbox_length(app)
    with pytest.raises(SchemaViolation, match="field 'amount'"):
        app.client.emit("approve", {"amount": "lots"}, instance_id=iid)
    with pytest.raises(SchemaViolation, match="field 'amount': Field required"):
        app.client.emit("approve", {}, instance_id=iid)
    assert inbox_length(app) == before
    result = run_cli(
        "emit",
        "approve",
        "--workflow",
        iid,
        "--data",
        '{"amount": []}',
        env=cli_env(app.settings.redis_url, tmp_path),
    )
    assert result.returncode == 1
    assert "approve data does not fit its schema: field 'amount'" in result.stderr
    assert inbox_length(app) == before


def test_payload_is_read_as_the_schema_says(app: App) -> None:
    iid = app.client.start("approval", {"request_id": "S2", "minimum": 5})
    app.client.emit("approve", {"amount": "10"}, instance_id=iid)
    app.applier().drain()
    approved = app.client.history(iid)[-1]
    assert approved["event"]["data"] == {"amount": 10.0}
    assert app.client.status(iid).state == "approved"


def test_bad_payload_that_slipped_past_the_door_is_dead_lettered(app: App) -> None:
    iid = app.client.start("approval", {"request_id": "S3"})
    applier = app.applier()
    applier.drain()
    bad = Event(id="b1", type="approve", instance_id=iid, at=time.time(), data={"amount": "x"})
    app.redis.xadd(app.keys.inbox(app.keys.partition_of(iid)), {"e": bad.to_json()})
    applier.drain()
    (letter,) = app.client.dead_letters.read()
    assert "field 'amount'" in letter["reason"]
    assert app.client.status(iid).state == "waiting"

"""The door refuses what could never work: a start without the workflow's correlation key,
an event addressed by a key no workflow correlates by."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from orchestrator.core.errors import InputError
from orchestrator.entry.bootstrap import App
from tests.conftest import cli_env, run_cli


def keys_of(client: redis.Redis) -> set[bytes]:
    """Every key but the deployment's meta (written when a process first connects)."""
    return {key for key in client.keys("*") if not key.endswith(b":meta")}


def test_start_without_the_correlation_key_is_refused_and_writes_nothing(app: App) -> None:
    # Given the approval workflow, which correlates by request_id
    before = keys_of(app.redis)
    # When it is started with an input that lacks request_id
    with pytest.raises(InputError) as caught:
        app.client.start("approval", {"amount": 10})
    # Then the error names the key, and nothing was written
    assert "'request_id'" in str(caught.value) and "approval" in str(caught.value)
    assert keys_of(app.redis) == before
    # And with the key it starts
    assert app.client.start("approval", {"request_id": "R1"})


def test_start_without_the_key_is_one_error_line_in_the_cli(
    redis_url: str, tmp_path: Path, app: App
) -> None:
    env = cli_env(redis_url, tmp_path)
    before = keys_of(app.redis)
    result = run_cli("start", "order", "--input", '{"items": 2}', env=env)
    assert result.returncode != 0 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "'order_id'" in lines[0]
    assert keys_of(app.redis) == before


def test_emit_by_a_key_no_workflow_correlates_by_names_the_keys(app: App) -> None:
    with pytest.raises(InputError) as caught:
        app.client.emit("pay", {"amount": 1}, key=("orderid", "A1"))
    message = str(caught.value)
    assert "'orderid'" in message
    for known in ("order_id", "request_id", "user_id", "sensor_id"):
        assert known in message


def test_emit_key_in_the_cli_names_the_keys(redis_url: str, tmp_path: Path) -> None:
    env = cli_env(redis_url, tmp_path)
    result = run_cli("emit", "pay", "--key", "orderid=A1", env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "'orderid'" in result.stderr and "order_id" in result.stderr
    assert "no running instance answers" not in result.stderr


def test_emit_by_a_known_key_without_an_instance_still_says_so(app: App) -> None:
    from orchestrator.core.errors import UnknownInstance

    with pytest.raises(UnknownInstance, match="no running instance answers to order_id=NONE"):
        app.client.emit("pay", {"amount": 1}, key=("order_id", "NONE"))

"""Size limits: anything over is rejected before any write, with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.errors import InputError
from orchestrator.core.limits import MAX_DATA_BYTES, depth
from orchestrator.entry.bootstrap import App
from tests.conftest import cli_env, run_cli


def inbox_length(app: App) -> int:
    return sum(app.redis.xlen(app.keys.inbox(p)) for p in range(app.keys.partitions))


def test_oversized_and_deeply_nested_data_is_refused_before_any_write(app: App) -> None:
    iid = app.client.start("counter")
    before = inbox_length(app)
    big = {"blob": "x" * (MAX_DATA_BYTES + 1)}
    with pytest.raises(InputError, match=r"the data of tick is .* bytes of JSON; the limit is"):
        app.client.emit("tick", big, instance_id=iid)
    with pytest.raises(InputError, match=r"the input is .* bytes of JSON"):
        app.client.start("counter", big)
    nested: dict[str, object] = {}
    cursor = nested
    for _ in range(40):
        cursor["a"] = {}
        cursor = cursor["a"]  # type: ignore[assignment]
    with pytest.raises(InputError, match="nested more than 32 levels"):
        app.client.emit("tick", nested, instance_id=iid)
    with pytest.raises(InputError, match="not JSON data"):
        app.client.emit("tick", {"n": float("nan")}, instance_id=iid)
    assert inbox_length(app) == before
    assert len(app.client.list(workflow="counter")) == 1


def test_the_cli_refuses_oversized_arguments_clearly(app: App, tmp_path: Path) -> None:
    env = cli_env(app.settings.redis_url, tmp_path)
    payload = tmp_path / "big.json"
    payload.write_text('{"blob": "' + "x" * (MAX_DATA_BYTES + 10) + '"}')
    result = run_cli("start", "counter", "--input", f"@{payload}", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: --input in ")
    assert "the limit is" in result.stderr and "Traceback" not in result.stderr
    deep = "[" * 50 + "]" * 50
    result = run_cli("start", "counter", "--input", '{"a": ' + deep + "}", env=env)
    assert result.returncode == 1 and "nested more than 32 levels" in result.stderr


def test_depth() -> None:
    assert depth(1) == 0
    assert depth({"a": [1, {"b": 2}]}) == 3

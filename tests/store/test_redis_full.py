"""A Redis at its maxmemory (noeviction): reads keep working, writes fail clearly.

Every command used to write at start-up (the deployment's partition count), so
with Redis full even `status` ended as "internal error". Here a real
redis-server is filled to its limit, and the CLI runs against it in
subprocesses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from support.redis_server import RedisServer
from tests.conftest import cli_env, run_cli


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A Redis with one finished counter instance, then filled past its maxmemory.

    Yields the URL, the instance's id and a folder for the CLI's home."""
    server = RedisServer(tmp_path, "--maxmemory-policy", "noeviction")
    server.start()
    url = server.url
    try:
        env = cli_env(url, tmp_path)
        started = run_cli("start", "counter", "--input", '{"n": 1}', env=env)
        assert started.returncode == 0, started.stderr
        instance = started.stdout.strip()
        burst = run_cli("worker", "--burst", env=env)
        assert burst.returncode == 0, burst.stderr
        client = redis.Redis.from_url(url)
        for i in range(8):
            client.set(f"filler:{i}", b"x" * 256 * 1024)
        # a limit under what is used: every write is refused (OOM), every read answered
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) // 2)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("one-more", 1)
        client.close()
        yield url, instance, tmp_path
    finally:
        server.stop()


READS: dict[str, Any] = {
    "status": ["status", "{id}", "--json"],
    "list": ["list", "--json"],
    "history": ["history", "{id}", "--json"],
    "dead-letters": ["dead-letters", "--json"],
}


@pytest.mark.parametrize("args", READS.values(), ids=list(READS))
def test_read_commands_work_while_redis_is_full(
    full_redis: tuple[str, str, Path], args: list[str]
) -> None:
    url, instance, home = full_redis
    result = run_cli(*(a.format(id=instance) for a in args), env=cli_env(url, home))
    assert result.returncode == 0, f"{args}: {result.returncode} {result.stderr}"
    assert result.stderr == ""
    found = json.loads(result.stdout)
    if args[0] == "status":
        assert found["id"] == instance and found["state"] == "counting"
    elif args[0] == "list":
        assert [i["id"] for i in found] == [instance]
    elif args[0] == "history":
        assert [e["event"]["type"] for e in found] == ["workflow.started"]
    else:
        assert found == []


def test_reads_work_on_a_full_redis_for_a_new_namespace(
    full_redis: tuple[str, str, Path],
) -> None:
    """A namespace never used: nothing to record its partition count in, nothing to list."""
    url, _, home = full_redis
    env = cli_env(url, home, ORCHESTRATOR_NAMESPACE="fresh")
    result = run_cli("list", env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "no instances\n", "")


def test_a_write_to_a_full_redis_is_one_clear_line(full_redis: tuple[str, str, Path]) -> None:
    url, instance, home = full_redis
    env = cli_env(url, home)
    for args in (
        ["start", "counter", "--input", '{"n": 2}'],
        ["emit", "tick", "--workflow", instance],
        ["cancel", instance],
    ):
        result = run_cli(*args, env=env)
        assert result.returncode == 1, f"{args}: {result.returncode} {result.stderr}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "Redis is out of memory" in lines[0] and "maxmemory" in lines[0]
        assert "internal error" not in result.stderr

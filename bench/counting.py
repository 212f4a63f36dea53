"""Counting what a measured piece of code asks of Redis.

Two independent counts:

- round trips, on the client: every request the client writes to a socket
  goes through `Connection.send_packed_command` exactly once (a single
  command, a whole pipeline, a whole MULTI/EXEC block, a Lua script call,
  a health-check PING) and is followed by reading the replies, so the number
  of calls is the number of round trips. A client built by `counted_client`
  uses a connection class that counts them.
- commands, on the server: `INFO commandstats` after `CONFIG RESETSTAT`,
  per command name. A MULTI/EXEC block of 40 commands is one round trip but
  42 commands; commands run inside Lua scripts show up under their own names
  as well as under `evalsha`. The per-command `usec` nests the same way (EXEC
  and EVALSHA include the commands they ran), so it is kept only by name;
  the server's CPU time is the `used_cpu_user` + `used_cpu_sys` delta of
  `INFO cpu`, which also covers reading requests and writing replies.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.connection import Connection


class RoundTrips:
    """A thread-safe counter shared by every connection of a counted client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self) -> None:
        with self._lock:
            self.count += 1

    def reset(self) -> None:
        with self._lock:
            self.count = 0


def counted_client(url: str) -> tuple[redis.Redis, RoundTrips]:
    """A client whose every round trip to the server is counted."""
    counter = RoundTrips()

    class CountingConnection(Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            counter.add()
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool), counter


# Commands the benchmark itself sends to read the statistics; never counted.
_OWN = frozenset({"config|resetstat", "info", "config"})


@dataclass(frozen=True)
class CommandStats:
    calls: dict[str, int] = field(default_factory=dict)
    usec: dict[str, int] = field(default_factory=dict)  # nested: see the module docstring

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


def reset_command_stats(admin: redis.Redis) -> None:
    admin.config_resetstat()


def ping_usec(url: str, count: int = 2000) -> float:
    """Median wall time of one PING round trip on this machine, in microseconds."""
    client = redis.Redis.from_url(url)
    client.ping()
    times: list[float] = []
    for _ in range(count):
        start = time.perf_counter()
        client.ping()
        times.append(time.perf_counter() - start)
    client.close()
    return statistics.median(times) * 1e6


def server_cpu_seconds(admin: redis.Redis) -> float:
    """CPU time the server process has used so far, user plus system."""
    info: dict[str, Any] = admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def read_command_stats(admin: redis.Redis) -> CommandStats:
    """Per-command calls and server CPU microseconds since the last reset."""
    info: dict[str, Any] = admin.info("commandstats")
    calls: dict[str, int] = {}
    usec: dict[str, int] = {}
    for key, value in info.items():
        name = key.removeprefix("cmdstat_")
        if name in _OWN or not isinstance(value, dict):
            continue
        calls[name] = int(value.get("calls", 0))
        usec[name] = int(value.get("usec", 0))
    return CommandStats(calls=calls, usec=usec)

"""One measurement: items processed, wall time, and what was asked of Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.counting import (
    CommandStats,
    RoundTrips,
    read_command_stats,
    reset_command_stats,
    server_cpu_seconds,
)


@dataclass
class Measurement:
    name: str
    items: int = 0
    seconds: float = 0.0
    round_trips: int = 0
    server_cpu: float = 0.0  # seconds
    stats: CommandStats = field(default_factory=CommandStats)
    extra: dict[str, Any] = field(default_factory=dict)

    def per(self, value: float) -> float:
        return value / self.items if self.items else float("nan")

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds else float("nan")

    @property
    def usec_per_item(self) -> float:
        return self.per(self.seconds * 1e6)

    @property
    def round_trips_per_item(self) -> float:
        return self.per(self.round_trips)

    @property
    def commands_per_item(self) -> float:
        return self.per(self.stats.total_calls)

    @property
    def server_usec_per_item(self) -> float:
        return self.per(self.server_cpu * 1e6)

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "seconds": round(self.seconds, 6),
            "per_second": round(self.per_second, 1),
            "usec_per_item": round(self.usec_per_item, 2),
            "round_trips": self.round_trips,
            "round_trips_per_item": round(self.round_trips_per_item, 4),
            "commands": self.stats.total_calls,
            "commands_per_item": round(self.commands_per_item, 4),
            "server_cpu_seconds": round(self.server_cpu, 6),
            "server_usec_per_item": round(self.server_usec_per_item, 3),
            "commands_by_name": dict(sorted(self.stats.calls.items())),
            "commandstats_usec_by_name": dict(sorted(self.stats.usec.items())),
            **self.extra,
        }


@contextmanager
def timed(result: Measurement, admin: redis.Redis, trips: RoundTrips) -> Iterator[None]:
    """Time the block, counting its round trips and the commands the server ran.

    `admin` is an uncounted client used only to reset and read the statistics.
    """
    reset_command_stats(admin)
    cpu = server_cpu_seconds(admin)
    trips.reset()
    start = time.perf_counter()
    try:
        yield
    finally:
        result.seconds = time.perf_counter() - start
        result.round_trips = trips.count
        result.server_cpu = server_cpu_seconds(admin) - cpu
        result.stats = read_command_stats(admin)

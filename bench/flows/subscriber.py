"""A subscriber to what the engine publishes, in its own process: one consumer group
reading every published event through `Orchestrator.subscribe`, counting what it
consumed (issue #17's "a subscriber keeps up with the flows workload").

    python -m bench.flows.subscriber REDIS_URL BOARD RESULT [--group NAME]

The group starts at the streams' start, so nothing published before it first reads
is missed. Its loop does nothing but count: per event, the time it was consumed and
its stream entry's time (the entry id's milliseconds: the server's clock when the
applier's commit wrote it), its type, and its CloudEvents id (to see duplicates).

It shares a small file with the driver (`Board`, memory-mapped): the events consumed
so far, and its own requests to Redis (round trips, bytes, commands by name, counted
as `bench.flows.trips.counted_client` counts the driver's), which the driver leaves
out of the server's counts, as it leaves out its own: the engine's round trips per
step stay the engine's. The driver sets the board's stop flag; the subscriber then
leaves its loop (within `BLOCK` s), writes RESULT (JSON) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import mmap
import struct
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from redis.connection import Connection

from orchestrator.entry.client import Orchestrator
from orchestrator.entry.connection import keys_for
from orchestrator.entry.settings import Settings
from orchestrator.runtime.registry import Registry

GROUP = "bench-subscriber"
BLOCK = 0.2  # s, the longest XREADGROUP BLOCK: how soon an idle subscriber sees the stop flag
# commands counted by name on the board (the first word, as the driver's count has them)
COMMANDS = ("xreadgroup", "xack", "xautoclaim", "xgroup", "xinfo", "hello", "client", "ping")
OTHER = "other"
_HEAD = struct.Struct("<qqdqq")  # stop flag, consumed, last consumed at, round trips, bytes
_SLOT = struct.Struct("<q")
SIZE = _HEAD.size + _SLOT.size * (len(COMMANDS) + 1)


class Board:
    """A few counters in a file both processes map: one writer per field (the subscriber,
    but for the stop flag, the driver's). A reader may see one request's trip counted
    before its bytes: no lock, no torn 8-byte word."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("r+b") as handle:
            self._map = mmap.mmap(handle.fileno(), SIZE)

    @classmethod
    def create(cls, path: Path) -> Board:
        path.write_bytes(bytes(SIZE))
        return cls(path)

    def _get(self) -> tuple[int, int, float, int, int]:
        found: tuple[int, int, float, int, int] = _HEAD.unpack_from(self._map, 0)
        return found

    def _bump(self, offset: int, by: int) -> None:
        (value,) = _SLOT.unpack_from(self._map, offset)
        _SLOT.pack_into(self._map, offset, value + by)

    # -- the subscriber's side --------------------------------------------------

    def sent(self, chunks: Any) -> None:
        size = len(chunks) if isinstance(chunks, bytes | str) else sum(len(c) for c in chunks)
        self._bump(24, 1)
        self._bump(32, size)

    def command(self, args: tuple[Any, ...]) -> None:
        if not args:
            return
        first = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        words = first.split()
        name = words[0].lower() if words else OTHER
        index = COMMANDS.index(name) if name in COMMANDS else len(COMMANDS)
        self._bump(_HEAD.size + _SLOT.size * index, 1)

    def consumed_one(self, at: float) -> None:
        self._bump(8, 1)
        struct.pack_into("<d", self._map, 16, at)

    def stopped(self) -> bool:
        return bool(self._get()[0])

    # -- the driver's side ------------------------------------------------------

    def stop(self) -> None:
        _SLOT.pack_into(self._map, 0, 1)

    @property
    def consumed(self) -> int:
        return self._get()[1]

    @property
    def last_consumed_at(self) -> float:
        return self._get()[2]

    def requests(self) -> tuple[int, int, Counter[str]]:
        """Round trips, bytes and commands by name the subscriber has sent so far."""
        _, _, _, trips, size = self._get()
        counts = [
            _SLOT.unpack_from(self._map, _HEAD.size + _SLOT.size * i)[0]
            for i in range(len(COMMANDS) + 1)
        ]
        commands = Counter({n: c for n, c in zip((*COMMANDS, OTHER), counts, strict=True) if c})
        return trips, size, commands

    def close(self) -> None:
        self._map.close()


def board_client(url: str, board: Board) -> redis.Redis:
    """A client whose every request is counted on the board (as trips.counted_client)."""

    class BoardConnection(Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            board.sent([command] if isinstance(command, bytes | str) else command)
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

        def send_command(self, *args: Any, **kwargs: Any) -> None:
            board.command(args)
            super().send_command(*args, **kwargs)  # type: ignore[no-untyped-call]

        def pack_commands(self, commands: Any) -> Any:
            commands = list(commands)
            for args in commands:
                board.command(tuple(args))
            return super().pack_commands(commands)  # type: ignore[no-untyped-call]

    pool = redis.ConnectionPool.from_url(url, connection_class=BoardConnection)
    return redis.Redis(connection_pool=pool)


def consume(url: str, board: Board, group: str = GROUP) -> dict[str, Any]:
    """Every published event, as member of `group`, until the board says stop."""
    client = board_client(url, board)
    app = Orchestrator(client, keys_for(client, Settings(redis_url=url)), Registry([]))
    published_ms = array("q")
    consumed_at = array("d")
    by_type: Counter[str] = Counter()
    ids: set[str] = set()
    subjects: set[str] = set()
    began, cpu = time.time(), time.process_time()
    for event in app.subscribe(group, start="start", block=BLOCK, stop=board.stopped):
        now = time.time()
        board.consumed_one(now)
        published_ms.append(int(event.entry_id.partition("-")[0]))
        consumed_at.append(now)
        by_type[event.type] += 1
        ids.add(event.id)
        subjects.add(event.subject)
    trips, size, commands = board.requests()
    client.close()
    return {
        "group": group,
        "consumed": len(consumed_at),
        "distinct_ids": len(ids),
        "instances": len(subjects),
        "by_type": dict(sorted(by_type.items())),
        "began": began,
        "cpu_seconds": round(time.process_time() - cpu, 3),  # its loop's, from its first read
        "published_ms": published_ms.tolist(),
        "consumed_at": consumed_at.tolist(),
        "requests": {"round_trips": trips, "input_bytes": size, "commands": dict(commands)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flows.subscriber", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("board", type=Path, help="the file the driver created (Board.create)")
    parser.add_argument("result", type=Path, help="where to write what it consumed (JSON)")
    parser.add_argument("--group", default=GROUP)
    args = parser.parse_args(argv)
    board = Board(args.board)
    try:
        found = consume(args.url, board, args.group)
    finally:
        board.close()
    args.result.write_text(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())

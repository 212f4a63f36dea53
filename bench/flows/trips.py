"""Redis round trips and commands per workflow step, counted on the server.

The workers of a system are separate processes (the engine's also fork), so
the one place that sees every client's requests is the server. Over a
window, the delta of `INFO stats`:

- `total_reads_processed`: the server's read events on client sockets. A
  request written at once and smaller than the server's read buffer (16 KB,
  PROTO_IOBUF_LEN) is one read: one command, one pipeline, one MULTI/EXEC
  block, one script call, one blocking pop; so reads count round trips.
  A larger request takes one read per 16 KB or so, and one that arrives in
  pieces (redis-py writes a pipeline in pieces of about 6 KB) may take one
  per piece: the count is then high, never low. `total_net_input_bytes`
  bounds that excess: the reads beyond the first of every request are at
  most input bytes / 6,000 (`excess_at_most`). A connection's close is one
  read more; opening one costs its handshake's round trips (redis-py 8: about
  four, all counted, as they are paid);
- `INFO commandstats`: commands by name (INFO itself left out). A
  MULTI/EXEC block of n commands counts n + 2; commands a Lua script runs
  count under their own names as well as under EVALSHA.

The driver's own requests in the window (polling for completion, the
snapshots themselves) are counted on its side, by the connection class of
every client it polls with (`counted_client`): round trips, input bytes and
commands by name; they are subtracted. What is left is the system's: its
workers, its applier or maintenance, busy or idle, over the window.

`check_method` runs the count on known requests, on a private server: ten
commands one by one must count 10, a pipeline of ten 1, a MULTI/EXEC of ten
1, a blocking pop 1, and the driver's count (round trips, commands by name)
must agree with the server's.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.connection import Connection

READ_BUFFER = 16 * 1024  # bytes redis-server reads from a client socket at once
WRITE_PIECE = 6000  # redis-py's buffer_cutoff: a pipeline is written in pieces of about this
LEFT_OUT = frozenset({"info"})  # the snapshots: neither side counts them
TRIPS_LABEL = "Redis round trips per workflow step, at load"
TOP_COMMANDS = 8


@dataclass
class DriverCount:
    """What the driver's own clients sent: round trips, bytes and commands by name."""

    trips: int = 0
    input_bytes: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def sent(self, chunks: Any) -> None:
        size = len(chunks) if isinstance(chunks, bytes | str) else sum(len(c) for c in chunks)
        with self.lock:
            self.trips += 1
            self.input_bytes += size

    def command(self, args: tuple[Any, ...]) -> None:
        name = _name(args)
        if name:
            with self.lock:
                self.commands[name] += 1

    def copy(self) -> DriverCount:
        with self.lock:
            return DriverCount(self.trips, self.input_bytes, Counter(self.commands))


def _name(args: tuple[Any, ...]) -> str:
    if not args:
        return ""
    first = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    words = first.split()
    return words[0].lower() if words else ""


def counted_client(url: str) -> tuple[redis.Redis, DriverCount]:
    """A client whose every request is counted (round trips, bytes, commands)."""
    count = DriverCount()

    class CountingConnection(Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            count.sent([command] if isinstance(command, bytes | str) else command)
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

        def send_command(self, *args: Any, **kwargs: Any) -> None:
            count.command(args)
            super().send_command(*args, **kwargs)  # type: ignore[no-untyped-call]

        def pack_commands(self, commands: Any) -> Any:
            commands = list(commands)
            for args in commands:
                count.command(tuple(args))
            return super().pack_commands(commands)  # type: ignore[no-untyped-call]

    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool), count


@dataclass(frozen=True)
class Snapshot:
    reads: int
    input_bytes: int
    connections: int
    commands: dict[str, int]
    driver: DriverCount  # the driver's counts once this snapshot's own request was sent


def snapshot(client: redis.Redis, driver: DriverCount) -> Snapshot:
    """The server's counters, in one round trip on a counted client."""
    pipe = client.pipeline(transaction=False)
    pipe.info("stats")
    pipe.info("commandstats")
    stats, commandstats = pipe.execute()
    commands = {
        key.removeprefix("cmdstat_"): int(value.get("calls", 0))
        for key, value in commandstats.items()
        if isinstance(value, dict)
    }
    return Snapshot(
        reads=int(stats["total_reads_processed"]),
        input_bytes=int(stats["total_net_input_bytes"]),
        connections=int(stats["total_connections_received"]),
        commands=commands,
        driver=driver.copy(),
    )


def between(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """The system's round trips and commands from `before` to `after`, the driver's left out."""
    driver_trips = after.driver.trips - before.driver.trips
    driver_bytes = after.driver.input_bytes - before.driver.input_bytes
    driver_commands = after.driver.commands - before.driver.commands
    commands = {
        name: calls - before.commands.get(name, 0) - driver_commands.get(name, 0)
        for name, calls in after.commands.items()
        if name not in LEFT_OUT
    }
    input_bytes = after.input_bytes - before.input_bytes - driver_bytes
    return {
        "round_trips": after.reads - before.reads - driver_trips,
        "excess_at_most": input_bytes // WRITE_PIECE,
        "input_bytes": input_bytes,
        "connections_opened": after.connections - before.connections,
        "commands": {k: v for k, v in sorted(commands.items(), key=lambda kv: -kv[1]) if v > 0},
        "driver_round_trips": driver_trips,
        "driver_commands": sum(v for k, v in driver_commands.items() if k not in LEFT_OUT),
    }


class Meter:
    """Round trips over a window, on the system's server: start(), then stop(steps)."""

    def __init__(self, client: redis.Redis, driver: DriverCount) -> None:
        self.client = client
        self.driver = driver
        self.before: Snapshot | None = None

    def start(self) -> None:
        self.before = snapshot(self.client, self.driver)

    def stop(self, steps: int, seconds: float) -> dict[str, Any]:
        assert self.before is not None, "start() first"
        found = between(self.before, snapshot(self.client, self.driver))
        window = {"steps": steps, "window_seconds": round(seconds, 3)}
        return {**window, **found, **per_step(found, steps)}


def per_step(found: dict[str, Any], steps: int) -> dict[str, Any]:
    if not steps:
        return {"round_trips_per_step": None, "commands_per_step": None}
    commands = found["commands"]
    return {
        "round_trips_per_step": round(found["round_trips"] / steps, 3),
        "round_trips_per_step_at_least": round(
            max(0, found["round_trips"] - found["excess_at_most"]) / steps, 3
        ),
        "commands_per_step": round(sum(commands.values()) / steps, 3),
        "commands_per_step_by_name": {
            name: round(calls / steps, 3) for name, calls in list(commands.items())[:TOP_COMMANDS]
        },
        "input_bytes_per_step": round(found["input_bytes"] / steps),
    }


def check_method(url: str) -> dict[str, Any]:
    """The count on known requests (a fresh connection first, so no handshake falls in)."""
    client, driver = counted_client(url)
    client.ping()
    cases: dict[str, tuple[int, Any]] = {
        "10 commands one by one": (10, lambda: [client.set(f"check:{i}", i) for i in range(10)]),
        "a pipeline of 10": (1, lambda: _pipeline(client, 10, transaction=False)),
        "a MULTI/EXEC of 10": (1, lambda: _pipeline(client, 10, transaction=True)),
        "BLPOP timing out after 0.1 s": (1, lambda: client.blpop(["check:none"], 0.1)),
        "nothing": (0, lambda: None),
    }
    found: dict[str, Any] = {}
    ok = True
    try:
        for label, (expected, run) in cases.items():
            before = snapshot(client, driver)
            run()
            after = snapshot(client, driver)
            server = after.reads - before.reads - 1  # the second snapshot's own read
            ours = after.driver.trips - before.driver.trips - 1
            left = between(before, after)  # all of it the driver's: nothing left
            found[label] = {
                "server": server,
                "driver": ours,
                "left": left["round_trips"],
                "commands_left": left["commands"],
            }
            ok &= server == expected == ours and not left["round_trips"] and not left["commands"]
        client.delete(*[f"check:{i}" for i in range(10)], "check:h")
    finally:
        client.close()
    return {"ok": ok, "cases": found}


def _pipeline(client: redis.Redis, n: int, transaction: bool) -> None:
    pipe = client.pipeline(transaction=transaction)
    for i in range(n):
        pipe.hset("check:h", f"f{i}", i)
    pipe.execute()


def trips_rows(details: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system measured: round trips per step over its throughput run."""
    rows: list[dict[str, Any]] = []
    check = details.get("round_trips_check", {})
    for name, found in details.get("systems", {}).items():
        measured = found.get("throughput", {}).get("redis") if isinstance(found, dict) else None
        if not measured or measured.get("round_trips_per_step") is None:
            continue
        notes = [
            f"{measured['commands_per_step']:.1f} commands per step",
            f"{measured['connections_opened']} connections opened",
            f"over {measured['window_seconds']:g} s, first take to settled, "
            f"{measured['steps']} steps; the driver's {measured['driver_round_trips']} "
            "round trips left out",
        ]
        if measured["round_trips_per_step_at_least"] < 0.95 * measured["round_trips_per_step"]:
            notes.append(
                f"between {measured['round_trips_per_step_at_least']:g} and "
                f"{measured['round_trips_per_step']:g}: a large request may count more than once"
            )
        if check and not check.get("ok"):
            notes.append(f"the method's check failed: {check.get('cases')}")
        rows.append(
            {
                "workload": TRIPS_LABEL,
                "system": name,
                "value": measured["round_trips_per_step"],
                "note": "; ".join(notes),
            }
        )
    return rows


def commands_table(details: dict[str, Any]) -> str:
    """Per step, for each system measured: round trips, commands, the most frequent by name."""
    measured = {
        name: found["throughput"]["redis"]
        for name, found in details.get("systems", {}).items()
        if isinstance(found, dict) and found.get("throughput", {}).get("redis", {}).get("steps")
    }
    if not measured:
        return ""
    # each system's most frequent, and those of the others where it sends them too
    names = list(
        dict.fromkeys(n for m in measured.values() for n in m["commands_per_step_by_name"])
    )
    head = ["per workflow step, at load", *measured]
    lines = [
        ["Redis round trips", *(f"{m['round_trips_per_step']:.2f}" for m in measured.values())],
        [
            "  at least (large requests)",
            *(f"{m['round_trips_per_step_at_least']:.2f}" for m in measured.values()),
        ],
        ["Redis commands", *(f"{m['commands_per_step']:.2f}" for m in measured.values())],
        *([f"  {name}", *(_per(m, name) for m in measured.values())] for name in names),
        ["bytes sent to Redis", *(f"{m['input_bytes_per_step']:,}" for m in measured.values())],
    ]
    widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]

    def fmt(cols: list[str]) -> str:
        rest = [c.rjust(w) for c, w in zip(cols[1:], widths[1:], strict=True)]
        return "  ".join([cols[0].ljust(widths[0]), *rest])

    check = details.get("round_trips_check", {})
    footer = (
        "counted on the server (INFO stats total_reads_processed, INFO commandstats), "
        "the driver's own requests left out; method check on known requests: "
        + ("passed" if check.get("ok") else f"FAILED {check.get('cases')}")
    )
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, lines), footer])


def _per(measured: dict[str, Any], name: str) -> str:
    calls = measured["commands"].get(name)
    return "-" if not calls else f"{calls / measured['steps']:.2f}"

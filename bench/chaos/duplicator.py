"""The duplicating fault injector: every task.completed delivered one to three times.

    python -m bench.chaos.duplicator REDIS_URL LOG [--namespace N] [--partitions P]
                                     [--seed S] [--scale F]

A process of its own beside the workers (so the harness's threads cannot
slow it). It follows each instance's history stream (never trimmed, unlike
the inbox the applier trims as it commits, so no event slips past), then
the archive the commit that finishes the instance folds it into, and for
every task.completed found there appends the event's own inbox JSON, byte
for byte (the history keeps it as it came), to the instance's inbox again
0, 1 or 2 more times: one to three deliveries in all. Each copy waits a
random delay, most under 1.5 s (so it lands among the instance's later
events), some 2 to 6 s (so many land after the instance finished; every
copy of the last step's answer does); --scale shortens them for CI.

On SIGTERM it stops following, reads what the histories hold by then,
delivers every copy still waiting at its time, and exits 0. The log (JSON
lines) holds each copy as delivered: instance, event id, type, the history
entry of the original, how many of the instance's entries came after it,
and whether the instance was already final (`late`).
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import redis

from orchestrator.store import archive
from orchestrator.store.keys import Keys

FINAL = ("completed", "cancelled")
COPIES = (0, 1, 2)  # extra deliveries of one event, equally likely
SOON, LATE = (0.0, 1.5), (2.0, 6.0)  # seconds a copy waits
LATE_SHARE = 0.3  # copies that take the long wait


def _as_bytes(fields: Any) -> dict[bytes, bytes]:
    return {
        (k if isinstance(k, bytes) else k.encode()): (v if isinstance(v, bytes) else v.encode())
        for k, v in fields.items()
    }


def is_final(status: str, compensating_to: str) -> bool:
    return status in FINAL or (status == "failed" and not compensating_to)


class Duplicator:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        log: Path,
        seed: int,
        waits: tuple[tuple[float, float], tuple[float, float]] = (SOON, LATE),
    ) -> None:
        self.redis = client
        self.waits = waits
        self.keys = keys
        self.rng = random.Random(seed)
        self.log = log.open("a", encoding="utf-8")
        self.cursors: dict[str, str] = {}  # instance -> last history entry read
        self.after: dict[str, int] = {}  # instance -> history entries read so far
        self.known: set[str] = set()
        self.copied: set[tuple[str, str]] = set()  # (instance, event id) already scheduled
        self.due: list[tuple[float, int, dict[str, Any]]] = []  # heap of copies to deliver
        self.counter = 0
        self.stopping = False

    def stop(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> None:
        while not self.stopping:
            self.deliver()
            self.discover()
            if not self.cursors:  # nothing to follow yet (or any more): wait here instead
                time.sleep(self._wait() / 1000)
            self.follow(block=True)
        self.discover()
        self.follow(block=False)
        while self.due:
            self.deliver()
            time.sleep(0.02)
        self.log.close()

    def discover(self) -> None:
        ids: list[bytes] = self.redis.zrange(self.keys.all_instances, 0, -1)  # type: ignore[assignment]
        for instance_id in (i.decode() for i in ids):
            if instance_id not in self.known:
                self.known.add(instance_id)
                self.cursors[instance_id] = "0-0"
                self.after[instance_id] = 0

    def follow(self, block: bool) -> None:
        """Read new history entries of every instance still followed, until none is left."""
        while self.cursors:
            streams: Any = {self.keys.history(i): c for i, c in self.cursors.items()}
            wait = self._wait() if block else None
            reply: Any = self.redis.xread(streams, count=200, block=wait)
            if not reply:
                break
            for stream, entries in reply:
                instance_id = stream.decode().rsplit(":history:", 1)[1]
                for entry_id, fields in entries:
                    self.cursors[instance_id] = entry_id.decode()
                    self._entry(instance_id, entry_id.decode(), _as_bytes(fields))
            block = False  # drain what is there, then go back to delivering
        self.follow_archived()

    def follow_archived(self) -> None:
        """Instances finished since: the rest of their history is in their archive."""
        followed = list(self.cursors)
        pipe = self.redis.pipeline(transaction=False)
        for instance_id in followed:
            pipe.get(self.keys.archive(instance_id))
        for instance_id, blob in zip(followed, pipe.execute(), strict=True):
            if blob is None:
                continue
            entries = archive.unpack(blob)
            for position in range(self.after[instance_id], len(entries)):
                self._entry(instance_id, f"archive-{position}", _as_bytes(entries[position]))
            self.cursors.pop(instance_id, None)

    def _wait(self) -> int:
        """Milliseconds to block: until the next copy is due, at most 200."""
        if not self.due:
            return 200
        return max(1, min(200, int((self.due[0][0] - time.time()) * 1000)))

    def _entry(self, instance_id: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        """One history entry (stream or archive) read for the first time."""
        self.after[instance_id] += 1
        raw = fields[b"event"].decode()
        event = json.loads(raw)
        status = fields.get(b"status", b"").decode()
        if status in FINAL or status == "failed":  # nothing more to copy: stop following
            self.cursors.pop(instance_id, None)
        key = (instance_id, str(event["id"]))
        if event["type"] != "task.completed" or key in self.copied:
            return
        self.copied.add(key)
        extra = self.rng.choice(COPIES)
        self._write(
            {"kind": "seen", "instance": instance_id, "event_id": event["id"], "copies": extra}
        )
        for n in range(extra):
            soon, late = self.waits
            wait = self.rng.uniform(*(late if self.rng.random() < LATE_SHARE else soon))
            copy = {
                "kind": "copy",
                "instance": instance_id,
                "event_id": event["id"],
                "type": event["type"],
                "raw": raw,
                "original": entry_id,
                "seen_after": self.after[instance_id],
                "copy": n + 1,
            }
            self.counter += 1
            heapq.heappush(self.due, (time.time() + wait, self.counter, copy))

    def deliver(self) -> None:
        now = time.time()
        while self.due and self.due[0][0] <= now:
            _, _, copy = heapq.heappop(self.due)
            instance_id = copy.pop("instance")
            raw = copy.pop("raw")
            found: Any = self.redis.hmget(
                self.keys.instance(instance_id), "status", "compensating_to"
            )
            status, compensating_to = found
            late = is_final((status or b"").decode(), (compensating_to or b"").decode())
            inbox = self.keys.inbox(self.keys.partition_of(instance_id))
            added: Any = self.redis.xadd(inbox, {"e": raw})
            pipe = self.redis.pipeline(transaction=False)
            pipe.xlen(self.keys.history(instance_id))
            pipe.get(self.keys.archive(instance_id))
            streamed, archived = pipe.execute()
            between = int(streamed) + len(archive.unpack(archived))
            self._write(
                {
                    **copy,
                    "instance": instance_id,
                    "entry": added.decode(),
                    "at": time.time(),
                    "late": late,
                    "history_then": int(between),
                }
            )

    def _write(self, line: dict[str, Any]) -> None:
        self.log.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.log.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos.duplicator")
    parser.add_argument("redis_url")
    parser.add_argument("log", type=Path)
    parser.add_argument("--namespace", default="orch")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every wait by this")
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis_url)
    soon, late = ((a * args.scale, b * args.scale) for a, b in (SOON, LATE))
    keys = Keys(args.namespace, args.partitions)
    duplicator = Duplicator(client, keys, args.log, args.seed, waits=(soon, late))
    signal.signal(signal.SIGTERM, duplicator.stop)
    duplicator.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

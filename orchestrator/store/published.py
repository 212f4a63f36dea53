"""The published streams: what workflows publish, one Redis stream per partition (so an
instance's events keep their order, and a partition's applier commits them with its
step), read by position or by consumer group.

An entry holds the events of one commit of its partition, in order: fields "0", "1"...
each one event's CloudEvents JSON (orchestrator.runtime.publisher). They are read back
one by one; an entry is acknowledged once its last event is (events are handled in
order), so a consumer that dies mid-entry gets the whole entry again.

A position is a stream entry id, "<ms>-<n>": ids grow with time in every partition,
so one position (or a moment, as ms) starts every partition's stream at the same
point. Reading everything from a position merges the partitions by id: the order
the events were written in, near enough across partitions, exact within one
(so within one instance).

A consumer group reads each partition's stream from where it left off: entries are
delivered to one consumer of the group, stay pending until acknowledged, and are
claimed by another consumer after they have been pending too long (the one that
read them died). Trimming (by length when written, by age by the appliers) bounds
what is kept; a group that falls behind the trim loses what was trimmed.
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from orchestrator.core.durations import seconds
from orchestrator.core.errors import ConfigurationError, InputError
from orchestrator.store.keys import Keys

ENTRY_ID = re.compile(r"\d{1,20}(-\d{1,20})?")
START = "0-0"
END = "$"


@dataclass(frozen=True)
class Published:
    """One published event, where it is: the partition's stream, its entry id, its place
    in the entry and whether it is the entry's last."""

    partition: int
    entry_id: str
    event: dict[str, Any]  # CloudEvents JSON
    index: int = 0
    last: bool = True
    raw: bytes = b""  # the event's JSON as stored

    @property
    def id(self) -> str:
        return str(self.event.get("id", ""))

    @property
    def type(self) -> str:
        return str(self.event.get("type", ""))

    @property
    def subject(self) -> str:
        return str(self.event.get("subject", ""))

    @property
    def data(self) -> Any:
        return self.event.get("data")


def position(given: str | float | None, now: float | None = None) -> str:
    """A stream id from what a user gives: "start" (everything kept), "end" (only what
    comes next), an entry id ("1733500000000-0"), a moment (ISO 8601 with its zone, or
    Unix seconds as a number) or a time ago ("15m", "2h", "7d")."""
    if given is None or given == "end":
        return END
    if given == "start":
        return START
    if isinstance(given, int | float):
        return f"{int(given * 1000)}-0"
    text = given.strip()
    if ENTRY_ID.fullmatch(text) and "-" in text:
        return text
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is not None:
        if moment.tzinfo is None:
            raise InputError(f"--from {given!r}: give the moment's zone (as 'Z' or '+01:00')")
        return f"{int(moment.timestamp() * 1000)}-0"
    try:
        ago = seconds(text, "--from")
    except ConfigurationError:
        raise InputError(
            f"--from {given!r} is not 'start', 'end', an entry id (1733500000000-0), a "
            "moment (2026-12-06T10:00:00Z) or a time ago (15m, 2h, 7d)"
        ) from None
    return f"{int(((now or time.time()) - ago) * 1000)}-0"


def matches(patterns: Sequence[str], event_type: str) -> bool:
    """Whether a type matches one of the patterns (shell-style: "order.*"); none: all."""
    return not patterns or any(fnmatch.fnmatchcase(event_type, p) for p in patterns)


def parse(partition: int, entry_id: bytes | str, fields: dict[bytes, bytes]) -> list[Published]:
    """The events of one entry, in order (when it was trimmed while pending, its fields
    are gone: one empty event stands for it, to be acknowledged)."""
    name = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if not fields:
        return [Published(partition, name, {})]
    raws = [fields[k] for k in sorted(fields, key=lambda k: int(k) if k.isdigit() else -1)]
    found = []
    for index, raw in enumerate(raws):
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {"type": "", "data": None, "unreadable": raw.decode("utf-8", "replace")}
        event = doc if isinstance(doc, dict) else {}
        found.append(Published(partition, name, event, index, index == len(raws) - 1, raw))
    return found


def _sort_key(item: Published) -> tuple[int, int, int, int]:
    ms, _, n = item.entry_id.partition("-")
    return int(ms), int(n or 0), item.partition, item.index


class PublishedStreams:
    """Reading what was published, by position or as a consumer group."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self.streams = keys.all_published()

    def _partition(self, stream: bytes | str) -> int:
        name = stream.decode() if isinstance(stream, bytes) else stream
        return self.streams.index(name)

    # -- by position ----------------------------------------------------------

    def read(self, after: dict[int, str], count: int) -> list[Published]:
        """The events of up to `count` entries after each partition's position, merged
        in id order."""
        pipe = self.redis.pipeline(transaction=False)
        for partition, stream in enumerate(self.streams):
            pipe.xrange(stream, min=f"({after[partition]}", count=count)
        found: list[Published] = []
        for partition, entries in enumerate(pipe.execute()):
            for entry_id, fields in entries:
                found += parse(partition, entry_id, fields)
        found.sort(key=_sort_key)
        return found

    def since(self, start: str) -> dict[int, str]:
        """Each partition's position for a start position ("$": its last entry now)."""
        if start != END:
            return dict.fromkeys(range(len(self.streams)), _before(start))
        pipe = self.redis.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xrevrange(stream, count=1)
        return {
            partition: (entries[0][0].decode() if entries else START)
            for partition, entries in enumerate(pipe.execute())
        }

    def wait(self, after: dict[int, str], block_ms: int) -> None:
        """Block until a partition has something past its position (or the time runs out)."""
        streams = {stream: after[p] for p, stream in enumerate(self.streams)}
        self.redis.xread(streams, count=1, block=block_ms)  # type: ignore[arg-type]

    # -- consumer groups ------------------------------------------------------

    def join(self, group: str, start: str) -> None:
        """Create the group on every partition's stream at `start` (a group that exists
        keeps its place)."""
        for stream in self.streams:
            try:
                self.redis.xgroup_create(stream, group, id=_before(start), mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def groups(self) -> list[str]:
        """The names of the consumer groups reading the streams."""
        return [row["name"] for row in self.group_info()]

    def group_info(self) -> list[dict[str, Any]]:
        """Each consumer group over the streams: its consumers, the entries it has read
        and not acknowledged (pending) and those not read yet (lag), all partitions (an
        entry holds the events of one commit of its partition)."""
        found: dict[str, dict[str, Any]] = {}
        for stream in self.streams:
            try:
                infos: Any = self.redis.xinfo_groups(stream)
            except redis.ResponseError:  # no stream yet
                continue
            for info in infos:
                name = info["name"].decode()
                row = found.setdefault(name, {"name": name, "consumers": 0, "pending": 0, "lag": 0})
                row["consumers"] = max(row["consumers"], int(info["consumers"]))
                row["pending"] += int(info["pending"])
                row["lag"] += int(info.get("lag") or 0)
        return [found[name] for name in sorted(found)]

    def leave(self, group: str) -> None:
        for stream in self.streams:
            try:
                self.redis.xgroup_destroy(stream, group)
            except redis.ResponseError:
                continue

    def take(
        self, group: str, consumer: str, count: int, block_ms: int, pending: bool = False
    ) -> list[Published]:
        """The next events for this consumer: with `pending`, those it read before and did
        not acknowledge (after a crash); else new ones, waiting up to `block_ms`."""
        start = "0" if pending else ">"
        streams: Any = dict.fromkeys(self.streams, start)
        replies: Any = self.redis.xreadgroup(
            group, consumer, streams, count=count, block=None if pending else block_ms
        )
        found: list[Published] = []
        for stream, entries in replies or []:
            partition = self._partition(stream)
            for entry_id, fields in entries:
                found += parse(partition, entry_id, fields or {})
        found.sort(key=_sort_key)
        return found

    def claim(self, group: str, consumer: str, idle_ms: int, count: int) -> list[Published]:
        """Events read by another consumer of the group and left unacknowledged for
        `idle_ms` (it died): they become this consumer's."""
        found: list[Published] = []
        for partition, stream in enumerate(self.streams):
            try:
                reply = self.redis.xautoclaim(stream, group, consumer, idle_ms, count=count)
            except redis.ResponseError:  # the group is not on this stream
                continue
            for entry_id, fields in reply[1]:
                if fields is not None:
                    found += parse(partition, entry_id, fields)
        found.sort(key=_sort_key)
        return found

    def ack(self, group: str, items: Iterable[Published]) -> None:
        """Acknowledge events: their entries whose last event is among them (events are
        handled in order), one XACK per partition, in one round trip."""
        ids: dict[int, list[str]] = {}
        for item in items:
            if item.last:
                ids.setdefault(item.partition, []).append(item.entry_id)
        if not ids:
            return
        pipe = self.redis.pipeline(transaction=False)
        for partition, entry_ids in ids.items():
            pipe.xack(self.streams[partition], group, *entry_ids)
        pipe.execute()

    # -- retention ------------------------------------------------------------

    def trim(self, partitions: Iterable[int], keep_for: float, now: float) -> None:
        """Drop what is older than `keep_for` seconds from these partitions' streams."""
        oldest = f"{int((now - keep_for) * 1000)}-0"
        pipe = self.redis.pipeline(transaction=False)
        for partition in partitions:
            pipe.xtrim(self.streams[partition], minid=oldest, approximate=True)
        pipe.execute()


def _before(start: str) -> str:
    """The position just before `start`, as XRANGE's exclusive minimum and XGROUP's id
    both want (everything after it is read): "<ms>-0" becomes the last id of ms-1."""
    if start in (START, END):
        return start
    ms, _, n = start.partition("-")
    if int(n or 0) > 0:
        return f"{ms}-{int(n) - 1}"
    return f"{int(ms) - 1}-18446744073709551615" if int(ms) > 0 else START

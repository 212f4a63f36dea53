"""Reading instances and their histories back out of Redis.

What comes back is parsed, never trusted: a hash or history that cannot be
read raises `Unreadable` naming the key, so a caller shows what is wrong
(and `list` skips the one instance) instead of failing on a stack trace.
"""

from __future__ import annotations

import base64
import builtins
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator.core.durations import show_duration
from orchestrator.core.errors import InputError, UnknownInstance
from orchestrator.core.events import Unreadable
from orchestrator.core.instance import PASSED, Instance
from orchestrator.store import archive
from orchestrator.store.keys import Keys

log = logging.getLogger("orchestrator.store.instances")

CHUNK = 500  # ids of an index examined per round trip when a listing filters
PAGE_BUDGET = 5000  # ids of an index a page examines at most (then it gives `next`)
MAX_CURSOR = 400

# Reads only, so Redis runs it even when out of memory (6.2 checks memory per write call).
_READ_HISTORY = """
local exists = redis.call('EXISTS', KEYS[1])
return {exists, redis.call('GET', KEYS[2]), redis.call('XRANGE', KEYS[3], '-', '+')}
"""


def decode_hash(raw: dict[bytes, bytes]) -> dict[str, str]:
    """A hash as text; raises Unreadable naming the first field that is not UTF-8."""
    try:
        return {k.decode(): v.decode() for k, v in raw.items()}
    except UnicodeDecodeError:
        for k, v in raw.items():
            for part in (k, v):
                try:
                    part.decode()
                except UnicodeDecodeError as exc:
                    raise Unreadable(f"field {decode_text(k)!r} is not UTF-8 ({exc})") from None
        raise


def decode_text(raw: bytes | str) -> str:
    """Bytes as text for showing: whatever is not UTF-8 as \\xNN escapes, never an error."""
    return raw if isinstance(raw, str) else raw.decode(errors="backslashreplace")


def read_instance(key: str, raw: dict[bytes, bytes]) -> Instance:
    """An instance hash as read from `key`; raises Unreadable naming the key and field."""
    try:
        return Instance.from_fields(decode_hash(raw))
    except Unreadable as exc:
        raise Unreadable(f"instance hash {key} is unreadable: {exc}") from None


class Store:
    def __init__(self, client: redis.Redis, keys: Keys, retention: float = 7 * 86400.0) -> None:
        self.redis = client
        self.keys = keys
        self.retention = retention
        self._read_history = client.register_script(_READ_HISTORY)

    def find(self, instance_id: str) -> Instance | None:
        key = self.keys.instance(instance_id)
        raw: dict[bytes, bytes] = self.redis.hgetall(key)  # type: ignore[assignment]
        return read_instance(key, raw) if raw else None

    def get(self, instance_id: str) -> Instance:
        instance = self.find(instance_id)
        if instance is None:
            raise self._missing(instance_id)
        return instance

    def _missing(self, instance_id: str) -> UnknownInstance:
        """Unknown, or known once and expired: say which."""
        removed = self.redis.zscore(self.keys.expired, instance_id)
        expiring = self.redis.zscore(self.keys.all_instances, instance_id)
        if removed is None and expiring is None:
            return UnknownInstance(f"no instance with id {instance_id!r}")
        kept = show_duration(self.retention)
        return UnknownInstance(
            f"instance {instance_id!r} has expired: finished instances and their history are "
            f"kept for {kept} (ORCHESTRATOR_RETENTION)"
        )

    def expired_count(self) -> int:
        return int(self.redis.zcard(self.keys.expired))

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        """The archive of a finished instance, then what its stream holds (all of a live
        instance's history; late copies of events recorded after it finished). Read at once
        by a read-only script: a commit folding the stream into the archive in between would
        hide both, and a script that only reads still runs while Redis is full (a MULTI
        does not)."""
        keys = [
            self.keys.instance(instance_id),
            self.keys.archive(instance_id),
            self.keys.history(instance_id),
        ]
        exists, archived, flat = self._read_history(keys=keys)
        live = [(entry_id, dict(zip(f[::2], f[1::2], strict=True))) for entry_id, f in flat]
        if not exists:
            raise self._missing(instance_id)
        entries = read_history(self.keys, instance_id, archived, live)
        try:
            return [entry for fields in entries for entry in history_entries(fields)]
        except (KeyError, ValueError, TypeError, AttributeError) as exc:  # text of a wrong shape
            what = f"{type(exc).__name__}: {exc}"
            raise Unreadable(f"history {keys[2]} is unreadable: {what}") from None

    def correlated(self, workflow: str, key: str, value: str) -> str | None:
        found: bytes | None = self.redis.get(self.keys.correlation(workflow, key, value))  # type: ignore[assignment]
        return found.decode() if found else None

    def list(
        self,
        *,
        workflow: str | None = None,
        state: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[Instance]:
        """Newest first, filtered through the indexes, page after page up to `limit`."""
        found: list[Instance] = []
        cursor: str | None = None
        while len(found) < limit:
            page = self.page(
                workflow=workflow,
                state=state,
                status=status,
                limit=limit - len(found),
                cursor=cursor,
            )
            found += page.instances
            cursor = page.next
            if cursor is None:
                break
        return found

    def page(
        self,
        *,
        workflow: str | None = None,
        state: str | None = None,
        status: str | None = None,
        state_workflows: Sequence[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        budget: int = PAGE_BUDGET,
    ) -> Page:
        """One page of instances, newest first (by creation), after `cursor`.

        It walks the workflow's creation index (or every instance's) from the cursor
        on, CHUNK ids at a time, keeping those in every filter set (SMISMEMBER: never a
        whole set read), and stops at `limit` found or `budget` ids examined; `next`
        then says where to go on (None: nothing more). A state without a workflow is
        looked up in the state sets of `state_workflows`; given none, each examined
        instance is read and its state compared."""
        order_key = self.keys.by_workflow(workflow) if workflow else self.keys.all_instances
        groups: builtins.list[
            builtins.list[str]
        ] = []  # every group must hold the id, in one of its sets
        if status:
            groups.append([self.keys.by_status(status)])
        read_state: str | None = None
        if state and workflow:
            groups.append([self.keys.by_state(workflow, state)])
        elif state and state_workflows is not None:
            if not state_workflows:
                return Page([], None, 0)
            groups.append([self.keys.by_state(w, state) for w in state_workflows])
        elif state:
            read_state = state
        position = parse_cursor(cursor) if cursor else None
        found: builtins.list[Instance] = []
        examined, skip = 0, 0
        while True:
            room = budget - examined
            want = min(CHUNK, room) if groups or read_state else min(limit - len(found) + 1, room)
            rows = self._after(order_key, position, skip, max(want, 1))
            fetched = len(rows)
            if position is not None:  # ids of the cursor's own score it returned already
                rows = [r for r in rows if not (r[1] == position[0] and r[0] >= position[1])]
            examined += fetched - len(rows)
            skip = skip + fetched if fetched and not rows else 0  # a run of equal scores
            matches = self._members(groups, [r[0] for r in rows])
            wanted = [r[0] for r, ok in zip(rows, matches, strict=True) if ok]
            loaded = self._load(wanted if read_state else wanted[: limit - len(found)])
            full = False
            for (instance_id, score), ok in zip(rows, matches, strict=True):
                if ok and instance_id not in loaded:
                    break  # not read: the next round starts here
                examined += 1
                position = (score, instance_id)
                instance = loaded.get(instance_id) if ok else None
                if instance is not None and (read_state is None or instance.state == read_state):
                    found.append(instance)
                    if len(found) >= limit:
                        full = True
                        break
            end = fetched < want
            more_in_chunk = bool(rows) and position != (rows[-1][1], rows[-1][0])
            if full:
                more = more_in_chunk or not end
                return Page(found, make_cursor(*position) if more and position else None, examined)
            if end and not more_in_chunk:
                return Page(found, None, examined)
            if examined >= budget:
                return Page(found, make_cursor(*position) if position else None, examined)

    def _after(
        self, order_key: str, position: tuple[float, str] | None, skip: int, count: int
    ) -> builtins.list[tuple[str, float]]:
        """Up to `count` (id, score) of the index, newest first, from `position` on (its
        score included: the caller drops the ids it has seen)."""
        top = "+inf" if position is None else repr(position[0])
        rows: builtins.list[tuple[bytes, float]] = self.redis.zrevrangebyscore(  # type: ignore[assignment]
            order_key, top, "-inf", start=skip, num=count, withscores=True
        )
        return [(member.decode(errors="replace"), score) for member, score in rows]

    def _members(
        self, groups: builtins.list[builtins.list[str]], ids: builtins.list[str]
    ) -> builtins.list[bool]:
        """For each id: in at least one set of every group (one round trip)."""
        if not groups or not ids:
            return [True] * len(ids)
        pipe = self.redis.pipeline(transaction=False)
        for group in groups:
            for key in group:
                pipe.smismember(key, ids)
        replies = iter(pipe.execute())
        keep = [True] * len(ids)
        for group in groups:
            inside = [False] * len(ids)
            for _ in group:
                inside = [a or bool(b) for a, b in zip(inside, next(replies), strict=True)]
            keep = [a and b for a, b in zip(keep, inside, strict=True)]
        return keep

    def _load(self, ids: builtins.list[str]) -> dict[str, Instance | None]:
        """The instances (one round trip); None for one gone or unreadable (logged)."""
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for instance_id in ids:
            pipe.hgetall(self.keys.instance(instance_id))
        loaded: dict[str, Instance | None] = {}
        for instance_id, raw in zip(ids, pipe.execute(), strict=True):
            loaded[instance_id] = None
            if not raw:
                continue
            try:
                loaded[instance_id] = read_instance(self.keys.instance(instance_id), raw)
            except Unreadable as exc:  # one corrupt hash must not hide every other instance
                log.error("listing skips instance %r: %s", instance_id, exc)
        return loaded


@dataclass(frozen=True)
class Page:
    """A page of a listing: the instances, where the next one starts (None: no more), and
    how many ids of the index were examined for it."""

    instances: list[Instance]
    next: str | None
    examined: int


def make_cursor(score: float, instance_id: str) -> str:
    """Where a listing goes on: past this creation score and id (opaque to clients)."""
    return base64.urlsafe_b64encode(f"{score!r}:{instance_id}".encode()).decode().rstrip("=")


def parse_cursor(cursor: str) -> tuple[float, str]:
    """A cursor's score and id; InputError when it is not one `make_cursor` made."""
    wrong = InputError("cursor is not one a listing gave (pass `next` back as it came)")
    if len(cursor) > MAX_CURSOR or not cursor.isascii():
        raise wrong
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score_text, sep, instance_id = text.partition(":")
        score = float(score_text)
    except (ValueError, UnicodeDecodeError):
        raise wrong from None
    if not sep or not instance_id or not math.isfinite(score):
        raise wrong
    return score, instance_id


def read_history(keys: Keys, instance_id: str, archived: Any, live: Any) -> list[dict[str, str]]:
    """An instance's archive (bytes or None) then its stream (an XRANGE reply), as field
    maps; raises Unreadable naming the key whose content cannot be read."""
    try:
        entries = archive.unpack(archived)
    except Exception as exc:  # zlib, JSON, shape: whatever it is, it is not an archive
        key = keys.archive(instance_id)
        raise Unreadable(f"archive {key} is unreadable: {type(exc).__name__}: {exc}") from None
    try:
        return entries + archive.stream_entries(live)
    except UnicodeDecodeError as exc:
        key = keys.history(instance_id)
        raise Unreadable(f"history {key} is unreadable: not UTF-8 ({exc})") from None


def history_entries(raw: dict[str, str]) -> list[dict[str, Any]]:
    """One stored history entry as shown: first an entry (outcome `passed`) for each state
    the event's step entered and left at once, naming the parked event that moved it on,
    then the event's own entry, from the last state passed through."""
    entry = {
        "seq": int(raw["seq"]),
        "event": json.loads(raw["event"]),
        "outcome": raw["outcome"],
        "from": raw.get("from") or None,
        "to": raw.get("to") or None,
        "status": raw["status"],
        "note": raw.get("note", ""),
        "effects": json.loads(raw.get("effects", "[]")),
    }
    passed = json.loads(raw.get("passed") or "[]")
    shown: list[dict[str, Any]] = []
    for step in passed:
        shown.append(
            {
                **entry,
                "outcome": PASSED,
                "to": step["state"],
                "status": "running",
                "note": f"passed through: left at once on parked {step['left_on']} "
                f"({step['left_by']})",
                "effects": [],
                "left_on": step["left_on"],
                "left_by": step["left_by"],
            }
        )
        entry["from"] = step["state"]
    return [*shown, entry]

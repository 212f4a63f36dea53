"""Webhook subscriptions as stored: each one's spec and delivery state, and its dead letters.

    N:subscriptions          hash    subscription id -> its document (JSON, below)
    N:subscription-dead:SID  stream  the events it could not deliver, oldest first

A subscription's document is its spec, written once by `add` (id, url, patterns,
secret_env: the NAME of the environment variable holding its signing secret, never
the secret; created), and its `state`, which the relays keep:

    owner, until       the relay delivering it and until when (a lease: one relay at a
                       time, so that its events go out in order)
    delivered, dead    events delivered, and dead-lettered, so far
    last_delivered     when the last one was delivered (Unix seconds)
    last_error         the last failure: at, event, type, status, error (host only)
    redeliver          redelivery requests made (`redeliver` adds one)...
    redelivered        ...and handled: a relay goes through the dead letters queued for
                       redelivery while redeliver > redelivered

The state changes in WATCH/MULTI transactions on the hash (`transact`), so a
subscription removed meanwhile is never written back, and two relays never both take
its lease. Each subscription reads the published streams as consumer group
`webhook:<id>` (store.published), created when it is added.

A dead letter holds the event as it was published (`e`, CloudEvents JSON) with why it
failed: id, type, subject, attempts, status, error, at, and `queued` ("1": queued for
redelivery). Redelivery moves the chosen letters, in their order, to the end of the
stream marked queued; the relay delivers them before any new event. A letter is written
only while its subscription exists (a script checks), so a removed subscription's
stream is never created again. Each stream keeps about DEAD_MAX_LEN letters.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis

from orchestrator.core.errors import InputError
from orchestrator.store.keys import Keys
from orchestrator.store.published import PublishedStreams

SUBSCRIPTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
GROUP_PREFIX = "webhook:"
CONSUMER = "relay"  # one name: only the lease holder reads a subscription's group
DEAD_MAX_LEN = 100_000
SCAN_PAGE = 500
LAG_CAP = 10_000  # unread events counted per partition at most, where Redis gives no lag

# A dead letter, written only while its subscription exists; `old` (an entry id, or "")
# is deleted in the same step (a redelivered letter that failed again moves to the end).
_BURY = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
if ARGV[3] ~= '' then redis.call('XDEL', KEYS[2], ARGV[3]) end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 4))
"""

# Dead letters moved to the end of the stream, in the order given, marked queued.
_QUEUE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local moved = 0
for i = 2, #ARGV do
  local found = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])
  if #found == 1 then
    local fields, out = found[1][2], {}
    for j = 1, #fields, 2 do
      if fields[j] ~= 'queued' then
        out[#out + 1] = fields[j]
        out[#out + 1] = fields[j + 1]
      end
    end
    out[#out + 1] = 'queued'
    out[#out + 1] = '1'
    redis.call('XDEL', KEYS[2], ARGV[i])
    redis.call('XADD', KEYS[2], '*', unpack(out))
    moved = moved + 1
  end
end
return moved
"""


def group_of(subscription: str) -> str:
    """The subscription's consumer group on the published streams."""
    return f"{GROUP_PREFIX}{subscription}"


def check_id(subscription: str) -> str:
    if not isinstance(subscription, str) or not SUBSCRIPTION_ID.fullmatch(subscription):
        raise InputError(
            f"subscription id {subscription!r}: use 1 to 64 letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return subscription


@dataclass(frozen=True)
class State:
    """Where a subscription's delivery stands (see the module's docstring)."""

    owner: str | None = None
    until: float = 0.0
    delivered: int = 0
    dead: int = 0
    last_delivered: float | None = None
    last_error: dict[str, Any] | None = None
    redeliver: int = 0
    redelivered: int = 0

    def leased(self, now: float) -> str | None:
        """The relay holding the lease now, if any."""
        return self.owner if self.owner and self.until > now else None


@dataclass(frozen=True)
class Subscription:
    """One subscription: its spec, as added, and its state."""

    id: str
    url: str
    patterns: tuple[str, ...]
    secret_env: str  # the NAME of the variable holding the secret, never the secret
    created: float
    state: State = field(default_factory=State)

    @property
    def group(self) -> str:
        return group_of(self.id)

    def dumps(self) -> str:
        doc = asdict(self)
        doc["patterns"] = list(self.patterns)
        return json.dumps(doc, separators=(",", ":"), sort_keys=True)

    @classmethod
    def loads(cls, raw: bytes | str) -> Subscription:
        doc = json.loads(raw)
        known = {f for f in State.__dataclass_fields__}
        state = State(**{k: v for k, v in (doc.get("state") or {}).items() if k in known})
        return cls(
            id=str(doc["id"]),
            url=str(doc["url"]),
            patterns=tuple(str(p) for p in doc.get("patterns", ())),
            secret_env=str(doc["secret_env"]),
            created=float(doc.get("created", 0.0)),
            state=state,
        )


@dataclass(frozen=True)
class DeadLetter:
    """An event a subscription could not deliver, and why."""

    entry: str  # its id in the dead-letter stream
    event_id: str
    type: str
    subject: str
    attempts: int
    status: int | None  # the receiver's last HTTP status, if it answered
    error: str
    at: float
    queued: bool  # queued for redelivery
    body: str  # the CloudEvent JSON, as published

    @property
    def event(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.body)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def summary(self) -> dict[str, Any]:
        """What `dead-letters` shows: no body, nothing secret."""
        return {
            "entry": self.entry,
            "id": self.event_id,
            "type": self.type,
            "subject": self.subject,
            "attempts": self.attempts,
            "status": self.status,
            "error": self.error,
            "at": self.at,
            "queued": self.queued,
        }


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str:
    return fields.get(name, b"").decode("utf-8", "replace")


def _letter(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> DeadLetter:
    status = _text(fields, b"status")
    try:
        at = float(_text(fields, b"at") or 0)
        attempts = int(_text(fields, b"attempts") or 0)
    except ValueError:
        at, attempts = 0.0, 0
    return DeadLetter(
        entry=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        event_id=_text(fields, b"id"),
        type=_text(fields, b"type"),
        subject=_text(fields, b"subject"),
        attempts=attempts,
        status=int(status) if status.isdigit() else None,
        error=_text(fields, b"error"),
        at=at if math.isfinite(at) else 0.0,
        queued=_text(fields, b"queued") == "1",
        body=_text(fields, b"e"),
    )


class SubscriptionStore:
    """The subscriptions hash and their dead-letter streams."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self.streams = PublishedStreams(client, keys)
        self._bury = client.register_script(_BURY)
        self._queue = client.register_script(_QUEUE)

    # -- specs ------------------------------------------------------------------

    def any(self) -> bool:
        return bool(self.redis.hlen(self.keys.subscriptions))

    def get(self, subscription: str) -> Subscription | None:
        raw: Any = self.redis.hget(self.keys.subscriptions, subscription)
        return None if raw is None else Subscription.loads(raw)

    def all(self) -> list[Subscription]:
        found: Any = self.redis.hgetall(self.keys.subscriptions)
        return sorted(_parsed(found).values(), key=lambda s: (s.created, s.id))

    def create(self, subscription: Subscription) -> bool:
        """Store a new subscription and create its group, reading from now on; False
        when the id is taken. A group left by an earlier subscription of the same id
        (one removed half way) is dropped first: a new subscription starts now."""
        if self.redis.hexists(self.keys.subscriptions, subscription.id):
            return False
        self.streams.leave(subscription.group)
        self.streams.join(subscription.group, "$")
        return bool(
            self.redis.hsetnx(self.keys.subscriptions, subscription.id, subscription.dumps())
        )

    def remove(self, subscription: str) -> bool:
        """Drop the subscription, its group and its dead letters; False if unknown."""
        removed = bool(self.redis.hdel(self.keys.subscriptions, subscription))
        self.streams.leave(group_of(subscription))
        self.redis.delete(self.keys.subscription_dead(subscription))
        return removed

    def transact(
        self, change: Callable[[dict[str, Subscription]], dict[str, Subscription]]
    ) -> dict[str, Subscription] | None:
        """Read every subscription and write back what `change` returns (id -> its new
        document), atomically: None when another writer came first (nothing written).
        `change` may run again on another try, so it must only compute."""
        key = self.keys.subscriptions
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                raw: Any = pipe.hgetall(key)
                found = _parsed(raw)
                changed = change(found)
                if not changed:
                    pipe.unwatch()
                    return found
                pipe.multi()
                pipe.hset(key, mapping={sid: doc.dumps() for sid, doc in changed.items()})
                pipe.execute()
            except redis.WatchError:
                return None
        return {**found, **changed}

    def update(
        self, subscription: str, change: Callable[[Subscription], Subscription]
    ) -> Subscription | None:
        """Change one subscription's document (retried while others write); None if it
        does not exist."""
        for _ in range(100):
            result = self.transact(
                lambda found: (
                    {subscription: change(found[subscription])} if subscription in found else {}
                )
            )
            if result is not None:
                return result.get(subscription)
        raise RuntimeError("the subscriptions hash changed 100 times in a row; try again")

    # -- where the group stands -------------------------------------------------

    def pending(self, subscription: str) -> int:
        """Stream entries its group has not handled yet (each the events one commit of a
        partition published): read and not acknowledged, or not read at all (of any type:
        those of other types are skipped when read).
        Counted up to LAG_CAP per partition where Redis (before 7) gives no lag."""
        group = group_of(subscription).encode()
        total = 0
        for stream in self.streams.streams:
            try:
                groups: Any = self.redis.xinfo_groups(stream)
            except redis.ResponseError:
                continue
            for info in groups:
                if info.get("name") != group:
                    continue
                total += int(info.get("pending") or 0)
                lag = info.get("lag")
                if lag is not None:
                    total += int(lag)
                else:
                    last = info.get("last-delivered-id", b"0-0")
                    last = last.decode() if isinstance(last, bytes) else str(last)
                    unread: Any = self.redis.xrange(stream, min=f"({last}", count=LAG_CAP)
                    total += len(unread)
        return total

    # -- dead letters -----------------------------------------------------------

    def bury(
        self,
        subscription: str,
        fields: Mapping[str, str],
        replacing: str = "",
    ) -> str | None:
        """Write a dead letter (replacing the letter `replacing`, if given): its entry
        id, or None when the subscription no longer exists (nothing written)."""
        flat = [part for pair in fields.items() for part in pair]
        found: Any = self._bury(
            keys=[self.keys.subscriptions, self.keys.subscription_dead(subscription)],
            args=[subscription, DEAD_MAX_LEN, replacing, *flat],
        )
        if found is None:
            return None
        return found.decode() if isinstance(found, bytes) else str(found)

    def forget(self, subscription: str, entry: str) -> None:
        """Drop a dead letter (it was delivered after all)."""
        self.redis.xdel(self.keys.subscription_dead(subscription), entry)

    def dead_count(self, subscription: str) -> int:
        return int(self.redis.xlen(self.keys.subscription_dead(subscription)))

    def dead_letters(
        self, subscription: str, limit: int | None = None, after: str = "-"
    ) -> list[DeadLetter]:
        """Its dead letters, oldest first, from after entry `after`, up to `limit`."""
        found: list[DeadLetter] = []
        for letter in self.scan_dead(subscription, after):
            found.append(letter)
            if limit is not None and len(found) >= limit:
                break
        return found

    def scan_dead(
        self, subscription: str, after: str = "-", until: str = "+"
    ) -> Iterator[DeadLetter]:
        """Its dead letters after `after` up to `until` (an entry id), a page at a time."""
        key = self.keys.subscription_dead(subscription)
        low = after
        while True:
            page: Any = self.redis.xrange(key, min=low, max=until, count=SCAN_PAGE)
            for entry_id, fields in page:
                yield _letter(entry_id, fields or {})
            if len(page) < SCAN_PAGE:
                return
            last = page[-1][0]
            low = "(" + (last.decode() if isinstance(last, bytes) else str(last))

    def last_dead(self, subscription: str) -> str | None:
        """The entry id of its newest dead letter."""
        found: Any = self.redis.xrevrange(self.keys.subscription_dead(subscription), count=1)
        if not found:
            return None
        entry = found[0][0]
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    def queue(self, subscription: str, entries: Sequence[str]) -> int:
        """Queue these dead letters for redelivery, in this order (moved to the end of the
        stream, marked queued), and ask the relay to go through them; how many moved."""
        moved = 0
        for start in range(0, len(entries), 100):
            batch = list(entries[start : start + 100])
            found: Any = self._queue(
                keys=[self.keys.subscriptions, self.keys.subscription_dead(subscription)],
                args=[subscription, *batch],
            )
            moved += int(found or 0)
        if moved:
            self.update(
                subscription,
                lambda doc: replace(
                    doc, state=replace(doc.state, redeliver=doc.state.redeliver + 1)
                ),
            )
        return moved


def _parsed(found: Mapping[bytes, bytes]) -> dict[str, Subscription]:
    """The readable documents of the hash, by id (one that cannot be read is skipped)."""
    docs: dict[str, Subscription] = {}
    for sid, raw in found.items():
        name = sid.decode() if isinstance(sid, bytes) else str(sid)
        try:
            docs[name] = Subscription.loads(raw)
        except (ValueError, KeyError, TypeError):
            continue
    return docs

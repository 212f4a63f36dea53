"""The notification ledger: one record per notification, so nothing is sent twice.

Key: `N:notification:KEY`, where KEY is the notify effect's job id (instance,
sequence, effect index) and the recipient. A job claims the record before it
sends and records the provider's answer after; a retried or re-delivered job
that finds the record sent does not send again. Statuses only move forward:

    pending -> sending -> sent -> delivered | undelivered
                  |  ^
                  v  |
               retrying / delayed      sending -> failed | skipped

The one window left: a process that dies after the provider accepted the
message and before `sent` is recorded. Its claim expires (`claim_seconds`),
the job is run again, and the message is sent a second time. Every such
resend is counted in the record's `resends`. So is the send that follows an
ambiguous answer: the whole message went out and the connection dropped, or
the answer came after the client stopped waiting. The try records `ambiguous`
with its `retrying`, and the next claim counts a resend and clears it. A
claim lasts while its owner's heartbeat key lives (the job refreshes it while
it runs), so a dead owner's claim is taken over within seconds, and a live
one's never.

Records expire with their instance (orchestrator.store.retention): the commit that
finishes an instance sets its time to live on the records in its index and on
their provider-message keys, and a record claimed later takes the instance's
remaining time to live. A record with no instance (`orchestrator notify send`),
or whose instance has already expired, lives for the deployment's retention,
as the appliers publish it in `N:meta` (RETENTION before any applier has run).

Records are read defensively: a key that is not a hash is treated as absent
(logged, and replaced by the next claim), a field that does not parse as its
kind is dropped (logged), and an unknown status reads as "unknown". An
unreadable record never stops a send nor a listing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from orchestrator.store.keys import Keys

log = logging.getLogger("orchestrator.runtime.notify.ledger")
RETENTION = 7 * 86400.0  # a record's time to live when no applier has published one
PROVIDER_ID_TTL = 30 * 86400  # a provider's message id, while its instance lives on


def record_key(job_key: str, to: object) -> str:
    """The record of one notification: its job's key (instance, sequence, effect index)
    and its recipient."""
    return f"{job_key}:{to}"


ORDER = {
    "pending": 0,
    "delayed": 1,
    "retrying": 1,
    "sending": 2,
    "failed": 3,
    "skipped": 3,
    "sent": 4,
    "undelivered": 5,
    "delivered": 5,
}
DONE = frozenset({"sent", "delivered", "undelivered", "failed", "skipped"})
_ORDER_JSON = json.dumps(ORDER)  # an argument of every advance

# KEYS: record, the deployment's meta hash, and for a notification of an instance: its
# index of notifications and the instance's hash. ARGV: owner, now, claim_until, fields
# JSON (set when the record is new), the owner's heartbeat key ("" for none), the
# notification's key, the recipient's key ("" for none), the retention in seconds when
# none is published. A claim holds while its owner's heartbeat lives (or, without one,
# until claim_until). Taking over a stale claim, or claiming after an ambiguous answer,
# counts a resend. A key that is not a hash is unreadable: it is replaced, as if absent.
# The record (and the index) take the instance's time to live once it has one, or the
# retention when there is no instance (any more). Returns {outcome, owner, record as a
# flat list, recipient's data once claimed or false, the unreadable key's type or ''}:
# "claimed" = send. One round trip for all of it: it runs once per notification.
_CLAIM = """
local unreadable = ''
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then
  redis.call('DEL', KEYS[1])
  unreadable = kind
end
local ttl = -2
if KEYS[3] then
  if redis.call('TYPE', KEYS[3])['ok'] ~= 'zset' then redis.call('DEL', KEYS[3]) end
  redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[6])
  ttl = redis.call('PTTL', KEYS[4])
end
if ttl == -2 then
  local kept = tonumber(redis.call('HGET', KEYS[2], 'retention') or '') or tonumber(ARGV[8])
  ttl = math.max(1000, math.floor(kept * 1000))
end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  local fields = cjson.decode(ARGV[4])
  for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
  status = 'pending'
end
if ttl > 0 then
  if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ttl) end
  if KEYS[3] and redis.call('PTTL', KEYS[3]) == -1 then redis.call('PEXPIRE', KEYS[3], ttl) end
end
if status == 'sent' or status == 'delivered' or status == 'undelivered'
   or status == 'failed' or status == 'skipped' then
  return {status, '', redis.call('HGETALL', KEYS[1]), false, unreadable}
end
if status == 'sending' then
  local alive = redis.call('HGET', KEYS[1], 'alive') or ''
  local held
  if alive ~= '' then
    held = redis.call('EXISTS', alive) == 1
  else
    held = (tonumber(redis.call('HGET', KEYS[1], 'claim_until') or '') or 0) > tonumber(ARGV[2])
  end
  if held then
    return {'busy', redis.call('HGET', KEYS[1], 'owner') or '', redis.call('HGETALL', KEYS[1]),
            false, unreadable}
  end
  redis.call('HDEL', KEYS[1], 'ambiguous')
  local resends = tonumber(redis.call('HGET', KEYS[1], 'resends') or '') or 0
  redis.call('HSET', KEYS[1], 'resends', math.floor(resends) + 1)
elseif redis.call('HDEL', KEYS[1], 'ambiguous') == 1 then
  local resends = tonumber(redis.call('HGET', KEYS[1], 'resends') or '') or 0
  redis.call('HSET', KEYS[1], 'resends', math.floor(resends) + 1)
end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '') or 0
redis.call('HSET', KEYS[1], 'status', 'sending', 'owner', ARGV[1], 'claim_until', ARGV[3],
           'alive', ARGV[5], 'updated_at', ARGV[2], 'attempts', math.floor(attempts) + 1)
local recipient = false
if ARGV[7] and ARGV[7] ~= '' and redis.call('TYPE', ARGV[7])['ok'] == 'hash' then
  recipient = redis.call('HGET', ARGV[7], 'data')
end
return {'claimed', ARGV[1], redis.call('HGETALL', KEYS[1]), recipient, unreadable}
"""

# KEYS: record; ARGV: new status, now, fields JSON. Moves forward only; a key that is not
# a hash (unreadable) is left alone.
_ADVANCE = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
local order = cjson.decode(ARGV[4])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if status ~= 'sending' and (order[ARGV[1]] or 0) <= (order[status] or 0) then return 0 end
local fields = cjson.decode(ARGV[3])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
return 1
"""

# KEYS: the provider-message key, the record; ARGV: the notification's key, the seconds it
# is kept while the record has no time to live (its instance is still running).
_REMEMBER = """
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl) end
return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
"""


@dataclass(frozen=True)
class Claim:
    outcome: str  # claimed | busy | sent | delivered | undelivered | failed | skipped
    record: dict[str, str]
    recipient: bytes | None = None  # the recipient's stored data, read with the claim


@dataclass(frozen=True)
class Ask:
    """A claim to make (Ledger.claim's arguments), so that several go in one round trip."""

    key: str
    owner: str
    fields: dict[str, Any]
    alive: str = ""
    recipient: str = ""


class Ledger:
    def __init__(self, client: redis.Redis, keys: Keys, claim_seconds: float = 60.0) -> None:
        self.redis = client
        self.keys = keys
        self.claim_seconds = claim_seconds
        self._claim = client.register_script(_CLAIM)
        self._advance = client.register_script(_ADVANCE)
        self._remember = client.register_script(_REMEMBER)

    def claim(
        self,
        key: str,
        owner: str,
        fields: dict[str, Any],
        alive: str = "",
        recipient: str = "",
    ) -> Claim:
        """Claim the right to send; `alive` is the owner's heartbeat key, if it keeps one.
        The recipient's data (at the Redis key `recipient`, if given) comes with a claim
        that succeeded: a round trip less per notification."""
        keys, args = self._call(Ask(key, owner, fields, alive, recipient))
        return _claimed(key, self._claim(keys=keys, args=args))

    def claim_many(self, asks: Sequence[Ask]) -> list[Claim | None]:
        """Several claims in one round trip (a packed job's items, as it starts), each the
        claim `claim` makes. None for one that failed here (the script not loaded yet, an
        error): its owner makes it alone, and meets the error there."""
        pipe = self.redis.pipeline(transaction=False)
        for ask in asks:
            keys, args = self._call(ask)
            pipe.evalsha(self._claim.sha, len(keys), *keys, *args)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError:
            return [None] * len(asks)
        return [
            None if isinstance(reply, Exception) else _claimed(ask.key, reply)
            for ask, reply in zip(asks, replies, strict=True)
        ]

    def _call(self, ask: Ask) -> tuple[list[str], list[str | float]]:
        now = time.time()
        keys = [self.keys.notification(ask.key), self.keys.meta]
        instance = ask.fields.get("instance")
        if instance:
            keys += [self.keys.notifications_of(str(instance)), self.keys.instance(str(instance))]
        fields = {**_strings(ask.fields), "key": ask.key, "created_at": repr(now)}
        args: list[str | float] = [
            ask.owner,
            now,
            now + self.claim_seconds,
            json.dumps(fields),
            ask.alive,
            ask.key,
            ask.recipient,
            RETENTION,
        ]
        return keys, args

    def advance(self, key: str, status: str, pipe: Pipeline | None = None, **fields: Any) -> bool:
        """Move a record forward (never back); returns whether it moved. With `pipe`, the
        move is queued there (to commit with the caller's other writes) and True returned."""
        args: list[str | float] = [
            status,
            time.time(),
            json.dumps(_strings(fields)),
            _ORDER_JSON,
        ]
        if pipe is not None:  # the script's text, not its hash: no NOSCRIPT inside a MULTI
            pipe.eval(_ADVANCE, 1, self.keys.notification(key), *args)
            return True
        return bool(self._advance(keys=[self.keys.notification(key)], args=args))

    def note(self, key: str, **fields: Any) -> None:
        """Record facts on a record without moving its status (e.g. targets already sent)."""
        mapping: Any = _strings(fields)
        try:
            self.redis.hset(self.keys.notification(key), mapping=mapping)
        except redis.ResponseError as exc:  # not a hash: unreadable, replaced by a claim
            log.warning("ledger record %s is unreadable (%s); facts not noted", key, exc)

    def get(self, key: str) -> dict[str, str] | None:
        """The record of notification `key`; None when absent or unreadable (logged)."""
        try:
            raw: dict[bytes, bytes] = self.redis.hgetall(self.keys.notification(key))  # type: ignore[assignment]
        except redis.ResponseError as exc:
            log.warning("ledger record %s is unreadable (%s): treated as absent", key, exc)
            return None
        return readable(key, raw) or None

    def of_instance(self, instance_id: str) -> list[dict[str, str]]:
        """The readable records of an instance's notifications, oldest first; one round
        trip for the index and one for the records."""
        try:
            found: list[bytes] = self.redis.zrange(self.keys.notifications_of(instance_id), 0, -1)  # type: ignore[assignment]
        except redis.ResponseError as exc:
            log.warning("notifications of %s unreadable (%s): none listed", instance_id, exc)
            return []
        keys = [k.decode("utf-8", "replace") for k in found]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(self.keys.notification(key))
        records: list[dict[str, str]] = []
        for key, raw in zip(keys, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(raw, Exception):
                log.warning("ledger record %s is unreadable (%s): not listed", key, raw)
            elif record := readable(key, raw):
                records.append(record)
        return records

    def by_provider_id(self, provider_id: str) -> str | None:
        try:
            found = self.redis.get(self.keys.provider_message(provider_id))
        except redis.ResponseError as exc:
            log.warning("provider message %s is unreadable (%s)", provider_id, exc)
            return None
        return found.decode("utf-8", "replace") if isinstance(found, bytes) else None

    def remember_provider_id(
        self, provider_id: str, key: str, pipe: Pipeline | None = None
    ) -> None:
        """Map a provider's message id to the notification, for its delivery receipts; kept
        as long as the record (PROVIDER_ID_TTL while the record's instance still runs)."""
        keys = [self.keys.provider_message(provider_id), self.keys.notification(key)]
        if pipe is not None:  # the script's text: no NOSCRIPT inside a MULTI
            pipe.eval(_REMEMBER, 2, *keys, key, PROVIDER_ID_TTL)
        else:
            self._remember(keys=keys, args=[key, PROVIDER_ID_TTL])


# What each field of a record holds, as `_strings` wrote it; one that does not parse is
# dropped as it is read (a missing field has a default everywhere a record is read).
_INTEGERS = frozenset({"attempts", "resends"})
_NUMBERS = frozenset({"created_at", "updated_at", "claim_until", "next_try", "until"})
_LISTS = frozenset({"warnings", "done_targets", "gone"})
_MAPS = frozenset({"refused"})
_FLAGS = frozenset({"urgent"})


def readable(key: str, raw: dict[bytes, bytes]) -> dict[str, str]:
    """A record as read from Redis, with what cannot be read dropped, each drop logged:
    bytes that are not UTF-8, a number or JSON field that does not parse as its kind. An
    unknown or missing status reads as "unknown"."""
    record: dict[str, str] = {}
    dropped: list[str] = []
    for name_bytes, value_bytes in raw.items():
        try:
            name, value = name_bytes.decode(), value_bytes.decode()
        except UnicodeDecodeError:
            dropped.append(repr(name_bytes)[2:-1])
            continue
        if _parses(name, value):
            record[name] = value
        else:
            dropped.append(name)
    if raw and record.get("status") not in ORDER:
        dropped += ["status"] if "status" in record else []
        record["status"] = "unknown"
    if dropped:
        log.warning("ledger record %s: unreadable %s ignored", key, ", ".join(sorted(dropped)))
    return record


def _parses(name: str, value: str) -> bool:
    try:
        if name in _INTEGERS:
            return int(value) >= 0
        if name in _NUMBERS:
            return float(value) == float(value)  # not NaN
        if name in _LISTS | _MAPS | _FLAGS:
            decoded = json.loads(value)
            if name in _LISTS:
                return isinstance(decoded, list) and all(isinstance(v, str) for v in decoded)
            if name in _MAPS:
                return isinstance(decoded, dict)
            return isinstance(decoded, bool)
    except ValueError:
        return False
    return True


def _claimed(key: str, reply: Any) -> Claim:
    outcome, _, flat, found, unreadable = reply
    if unreadable:
        log.warning(
            "ledger record %s was unreadable (a %s, not a hash): replaced, as if absent",
            key,
            unreadable.decode(),
        )
    raw = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
    record = readable(key, raw)
    data = found if isinstance(found, bytes) else None
    return Claim(outcome.decode(), record, data)


def _strings(fields: dict[str, Any]) -> dict[str, str]:
    return {
        k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None
    }

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
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from orchestrator.keys import Keys

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

# KEYS: record, and the instance's index of notifications (absent: no instance); ARGV:
# owner, now, claim_until, fields JSON (set when the record is new), the owner's heartbeat
# key ("" for none), the notification's key, the recipient's key ("" for none). A claim
# holds while its owner's heartbeat lives (or, without one, until claim_until). Taking
# over a stale claim, or claiming after an ambiguous answer, counts a resend. Returns
# {outcome, owner, record as a flat list, and once claimed the recipient's data}:
# "claimed" = send. One round trip for all of it: it runs once per notification.
_CLAIM = """
if KEYS[2] then redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[6]) end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  local fields = cjson.decode(ARGV[4])
  for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
  status = 'pending'
end
if status == 'sent' or status == 'delivered' or status == 'undelivered'
   or status == 'failed' or status == 'skipped' then
  return {status, '', redis.call('HGETALL', KEYS[1])}
end
if status == 'sending' then
  local alive = redis.call('HGET', KEYS[1], 'alive') or ''
  local held
  if alive ~= '' then
    held = redis.call('EXISTS', alive) == 1
  else
    held = tonumber(redis.call('HGET', KEYS[1], 'claim_until') or '0') > tonumber(ARGV[2])
  end
  if held then
    return {'busy', redis.call('HGET', KEYS[1], 'owner') or '', redis.call('HGETALL', KEYS[1])}
  end
  redis.call('HDEL', KEYS[1], 'ambiguous')
  redis.call('HINCRBY', KEYS[1], 'resends', 1)
elseif redis.call('HDEL', KEYS[1], 'ambiguous') == 1 then
  redis.call('HINCRBY', KEYS[1], 'resends', 1)
end
redis.call('HSET', KEYS[1], 'status', 'sending', 'owner', ARGV[1], 'claim_until', ARGV[3],
           'alive', ARGV[5], 'updated_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local recipient = false
if ARGV[7] and ARGV[7] ~= '' then recipient = redis.call('HGET', ARGV[7], 'data') end
return {'claimed', ARGV[1], redis.call('HGETALL', KEYS[1]), recipient}
"""

# KEYS: record; ARGV: new status, now, fields JSON. Moves forward only.
_ADVANCE = """
local order = cjson.decode(ARGV[4])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if status ~= 'sending' and (order[ARGV[1]] or 0) <= (order[status] or 0) then return 0 end
local fields = cjson.decode(ARGV[3])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
return 1
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
        return _claimed(self._claim(keys=keys, args=args))

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
        return [None if isinstance(reply, Exception) else _claimed(reply) for reply in replies]

    def _call(self, ask: Ask) -> tuple[list[str], list[str | float]]:
        now = time.time()
        keys = [self.keys.notification(ask.key)]
        instance = ask.fields.get("instance")
        if instance:
            keys.append(self.keys.notifications_of(str(instance)))
        fields = {**_strings(ask.fields), "key": ask.key, "created_at": repr(now)}
        args: list[str | float] = [
            ask.owner,
            now,
            now + self.claim_seconds,
            json.dumps(fields),
            ask.alive,
            ask.key,
            ask.recipient,
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
        self.redis.hset(self.keys.notification(key), mapping=mapping)

    def get(self, key: str) -> dict[str, str] | None:
        raw: dict[bytes, bytes] = self.redis.hgetall(self.keys.notification(key))  # type: ignore[assignment]
        return {k.decode(): v.decode() for k, v in raw.items()} or None

    def of_instance(self, instance_id: str) -> list[dict[str, str]]:
        keys: list[bytes] = self.redis.zrange(self.keys.notifications_of(instance_id), 0, -1)  # type: ignore[assignment]
        records = [self.get(k.decode()) for k in keys]
        return [r for r in records if r]

    def by_provider_id(self, provider_id: str) -> str | None:
        found = self.redis.get(self.keys.provider_message(provider_id))
        return found.decode() if isinstance(found, bytes) else None

    def remember_provider_id(
        self, provider_id: str, key: str, pipe: Pipeline | None = None
    ) -> None:
        target = self.redis if pipe is None else pipe
        target.set(self.keys.provider_message(provider_id), key, ex=30 * 86400)


def _claimed(reply: Any) -> Claim:
    outcome, _, flat, *found = reply
    record = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
    data = found[0] if found and isinstance(found[0], bytes) else None
    return Claim(outcome.decode(), record, data)


def _strings(fields: dict[str, Any]) -> dict[str, str]:
    return {
        k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None
    }

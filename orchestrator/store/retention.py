"""Retention: finished instances and everything written for them expire after a while.

When an instance finishes, the commit that finishes it sets a time to live
on its keys (hash, archived history, applied event ids) and on its
notifications' (the index `notifications:ID`, each ledger record in it and
the provider-message keys of the records sent), and files it under
`idx:expiring`. A notification recorded after its instance finished takes
the instance's remaining time to live (orchestrator.runtime.notify.ledger). The janitor, run
by the appliers about once a minute, removes expired instances from the
listing indexes and remembers their ids in `expired` for as long again as
the retention (at most REMEMBER_EXPIRED), so that `status` can say an
instance expired rather than that it never existed; it also publishes the
retention in `meta`, where the ledger reads it for notifications with no
instance. So, once an instance has been gone for one more retention period,
nothing of it is left in Redis.
"""

from __future__ import annotations

import json
import time

import redis
from redis.client import Pipeline

from orchestrator.core.instance import Instance
from orchestrator.store.deadletters import dead_letter
from orchestrator.store.keys import Keys

REMEMBER_EXPIRED = 90 * 86400  # how long `status` can still say "expired", at most
CLEAN_BATCH = 1000  # instances dropped from the indexes per transaction
CLEAN_BATCHES = 100  # transactions per clean at most (the rest waits for the next one)

# KEYS: the instance's index of notifications. ARGV: time to live (ms), the prefix of a
# ledger record's key, that of a provider-message key. Every record in the index, the
# provider-message keys of its provider ids, and the index itself get the time to live.
_EXPIRE_NOTIFICATIONS = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'zset' then return 0 end
local keys = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, key in ipairs(keys) do
  local record = ARGV[2] .. key
  if redis.call('TYPE', record)['ok'] == 'hash' then
    local sent = redis.call('HGET', record, 'provider_id')
    if sent then
      for id in string.gmatch(sent, '[^,]+') do redis.call('PEXPIRE', ARGV[3] .. id, ARGV[1]) end
    end
  end
  redis.call('PEXPIRE', record, ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #keys
"""


class Retention:
    def __init__(self, client: redis.Redis, keys: Keys, seconds: float) -> None:
        self.redis = client
        self.keys = keys
        self.seconds = seconds

    def finished(self, pipe: Pipeline, instance: Instance, now: float) -> None:
        """In the finishing commit: expire the instance's keys and its notifications', and
        file it for the janitor. No read: a few more commands in the commit's pipeline."""
        ttl = max(1, int(self.seconds))
        for key in (
            self.keys.instance(instance.id),
            self.keys.archive(instance.id),  # the history, folded by the same commit
            self.keys.applied(instance.id),
        ):
            pipe.expire(key, ttl)
        pipe.eval(  # the script's text, not its hash: no NOSCRIPT inside a MULTI
            _EXPIRE_NOTIFICATIONS,
            1,
            self.keys.notifications_of(instance.id),
            ttl * 1000,
            self.keys.notification(""),
            self.keys.provider_message(""),
        )
        member = json.dumps(
            {
                "id": instance.id,
                "workflow": instance.workflow,
                "state": instance.state,
                "status": instance.status,
            },
            sort_keys=True,
        )
        pipe.zadd(self.keys.expiring, {member: now + self.seconds})

    def clean(self, now: float | None = None, limit: int = CLEAN_BATCH) -> int:
        """Drop expired instances from the indexes, forget those expired longer ago than the
        retention, and publish the retention; returns how many instances were dropped.
        Drains the backlog, `limit` a transaction, up to CLEAN_BATCHES transactions: run
        once a minute, it keeps up with 100,000 instances finishing a minute."""
        now = time.time() if now is None else now
        remember = min(float(REMEMBER_EXPIRED), self.seconds)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.meta, "retention", repr(self.seconds))
            pipe.zremrangebyscore(self.keys.expired, "-inf", f"({now - remember}")
            pipe.execute()
        dropped = 0
        for _ in range(CLEAN_BATCHES):
            members: list[bytes] = self.redis.zrangebyscore(  # type: ignore[assignment]
                self.keys.expiring, "-inf", now, start=0, num=limit
            )
            if not members:
                break
            self._drop(members, now)
            dropped += len(members)
            if len(members) < limit:
                break
        return dropped

    def _drop(self, members: list[bytes], now: float) -> None:
        """Drop these expired entries from the indexes; one that cannot be read goes to the
        dead letters with its bytes instead of stopping every later clean."""
        pipe = self.redis.pipeline(transaction=True)
        for member in members:
            pipe.zrem(self.keys.expiring, member)
            try:
                entry = json.loads(member)
                iid, workflow, status, state = (
                    entry["id"],
                    entry["workflow"],
                    entry["status"],
                    entry["state"],
                )
                names = (iid, workflow, status, state or "")
                if not all(isinstance(name, str) for name in names):
                    raise TypeError("a name that is not text")
            except (ValueError, TypeError, KeyError) as exc:
                reason = f"unreadable entry of {self.keys.expiring}: {type(exc).__name__}: {exc}"
                letter = dead_letter("expiring", self.keys.expiring, "", member, reason)
                pipe.xadd(self.keys.deadletters, letter)  # type: ignore[arg-type]
                continue
            pipe.zrem(self.keys.all_instances, iid)
            pipe.zrem(self.keys.by_workflow(workflow), iid)
            pipe.srem(self.keys.by_status(status), iid)
            if state:
                pipe.srem(self.keys.by_state(workflow, state), iid)
            pipe.zadd(self.keys.expired, {iid: now})
        pipe.execute()

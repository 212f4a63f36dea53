"""Partition leases: which applier may apply a partition's events.

A lease is a key holding the owner's id with a time to live, renewed while
the owner lives. Appliers announce themselves in a heartbeat set; each aims
at its fair share of the partitions (ceil(P / live appliers)), takes free
leases up to it and lets go of any above it, so a new applier gets work and
a dead one's partitions are taken over once its leases expire.
"""

from __future__ import annotations

import math
import random
import time

import redis

from orchestrator.store.keys import INBOX_GROUP, Keys

# KEYS: lease keys; ARGV: owner id, ttl ms. Renews the leases still held; returns 1/0 each.
_RENEW = """
local held = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
"""

# KEYS: lease key; ARGV: owner id. Deletes the lease only if still held by the owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leases:
    def __init__(self, client: redis.Redis, keys: Keys, owner: str, ttl: float = 10.0) -> None:
        self.redis = client
        self.keys = keys
        self.owner = owner
        self.ttl_ms = int(ttl * 1000)
        self.owned: list[int] = []
        self._next_maintenance = 0.0
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def maintain(self, force: bool = False) -> list[int]:
        """Renew, rebalance and acquire; at most every third of the ttl. Returns new partitions."""
        now = time.monotonic()
        if not force and now < self._next_maintenance:
            return []
        self._next_maintenance = now + self.ttl_ms / 3000
        wall = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.appliers, {self.owner: wall})
        pipe.zremrangebyscore(self.keys.appliers, "-inf", wall - self.ttl_ms / 1000)
        pipe.zcard(self.keys.appliers)
        _, _, live = pipe.execute()
        if self.owned:
            held = self._renew(
                keys=[self.keys.lease(p) for p in self.owned], args=[self.owner, self.ttl_ms]
            )
            self.owned = [p for p, ok in zip(self.owned, held, strict=True) if ok]
        share = math.ceil(self.keys.partitions / max(1, int(live)))
        while len(self.owned) > share:
            self.release(self.owned[-1])
        gained: list[int] = []
        candidates = [p for p in range(self.keys.partitions) if p not in self.owned]
        random.shuffle(candidates)
        for partition in candidates:
            if len(self.owned) >= share:
                break
            if self.redis.set(self.keys.lease(partition), self.owner, nx=True, px=self.ttl_ms):
                self._ensure_group(partition)
                self.owned.append(partition)
                gained.append(partition)
        self.owned.sort()
        return gained

    def check_soon(self) -> None:
        """Renew (and find out which leases are still held) on the next maintain()."""
        self._next_maintenance = 0.0

    def forget(self, partition: int) -> None:
        """Stop using a partition whose lease was lost (it is someone else's now)."""
        if partition in self.owned:
            self.owned.remove(partition)

    def release(self, partition: int) -> None:
        self._release(keys=[self.keys.lease(partition)], args=[self.owner])
        self.forget(partition)

    def release_all(self) -> None:
        for partition in list(self.owned):
            self.release(partition)
        self.redis.zrem(self.keys.appliers, self.owner)

    def _ensure_group(self, partition: int) -> None:
        try:
            self.redis.xgroup_create(self.keys.inbox(partition), INBOX_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

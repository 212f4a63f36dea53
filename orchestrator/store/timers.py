"""Timers: per partition, a sorted set of armed timer ids by due time, and a
hash of the event each becomes.

Moving a due timer into the inbox is one script, so a timer is either still
armed or in the inbox, never both and never neither. Leaving a state cancels
the timers it armed; one that fires anyway in the race is bound to the state
entry that set it, so the event it becomes is stale and changes nothing.
"""

from __future__ import annotations

import redis

from orchestrator.store.keys import Keys

# KEYS: (timers zset, timer-events hash, inbox stream) per partition; ARGV: now, limit.
_FIRE = """
local moved = 0
for i = 1, #KEYS, 3 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
  for _, id in ipairs(due) do
    local event = redis.call('HGET', KEYS[i + 1], id)
    if event then redis.call('XADD', KEYS[i + 2], '*', 'e', event) end
    redis.call('HDEL', KEYS[i + 1], id)
    redis.call('ZREM', KEYS[i], id)
    moved = moved + 1
  end
end
return moved
"""


class Timers:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._fire = client.register_script(_FIRE)

    def fire_due(self, partitions: list[int], now: float, limit: int = 500) -> int:
        if not partitions:
            return 0
        keys: list[str] = []
        for p in partitions:
            keys += [self.keys.timers(p), self.keys.timer_events(p), self.keys.inbox(p)]
        return int(self._fire(keys=keys, args=[now, limit]))

    def next_due(self, partitions: list[int]) -> float | None:
        """When the earliest armed timer of these partitions falls due, if any is armed."""
        pipe = self.redis.pipeline(transaction=False)
        for p in partitions:
            pipe.zrange(self.keys.timers(p), 0, 0, withscores=True)
        dues = [entry[0][1] for entry in pipe.execute() if entry]
        return min(dues) if dues else None

"""Events held for an instance that has not started yet (a workflow's
`missing_instance = "wait"`), so that a sender need not order an event after the
creation of the instance it is for.

  N:waiting:WORKFLOW:KEY=VALUE  list  held events, oldest first, each as
                                      {"until": when its wait ends, "event": JSON}
  N:waiting                     zset  those lists, by when their oldest wait ends

Holding checks the business key and pushes in one script: an instance created
meanwhile takes the event at once instead. Creating an instance with that key (the
door's create script, store.inbox) moves the held events into its inbox right after
its start event, in order. Events whose wait ends unclaimed go to the dead letters,
naming the key and the wait (`expire_due`, run by the applier holding partition 0).
The event's instance id is a placeholder until then (WAITING), replaced by the create
script as text: it is the first field after "id" and "type", whose values are JSON
strings, so the placeholder cannot be matched inside them.
"""

from __future__ import annotations

import json

import redis

from orchestrator.core.events import Event
from orchestrator.store.keys import Keys

WAITING = "__waiting__"  # the instance id of a held event, until its instance exists

# KEYS: correlation key, waiting list, waiting zset. ARGV: entry JSON, until.
# Returns the live instance's id when there is one (nothing held), else "".
_HOLD = """
local live = redis.call('GET', KEYS[1])
if live then return live end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], 'NX', ARGV[2], KEYS[2])
return ''
"""

# KEYS: waiting zset, dead letters. ARGV: now, limit, reason prefix.
# Returns how many held events were set aside.
_EXPIRE = """
local moved = 0
local lists = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, list in ipairs(lists) do
  while true do
    local head = redis.call('LINDEX', list, 0)
    if not head then redis.call('ZREM', KEYS[1], list) break end
    local ok, entry = pcall(cjson.decode, head)
    local until_ = ok and type(entry) == 'table' and tonumber(entry['until']) or 0
    if until_ > tonumber(ARGV[1]) then
      redis.call('ZADD', KEYS[1], until_, list)
      break
    end
    redis.call('LPOP', list)
    local event = ok and type(entry) == 'table' and entry['event'] or head
    redis.call('XADD', KEYS[2], '*', 'source', 'waiting', 'key', list, 'entry', '',
      'event', tostring(event), 'reason', ARGV[3] .. list, 'at', ARGV[1])
    moved = moved + 1
  end
end
return moved
"""


class Waiting:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._hold = client.register_script(_HOLD)
        self._expire = client.register_script(_EXPIRE)

    def hold(self, workflow: str, key: tuple[str, str], event: Event, until: float) -> str | None:
        """Hold `event` (its instance id WAITING) until an instance of `workflow` with
        `key` starts, or `until`. Returns the id of one that already runs instead."""
        assert event.instance_id == WAITING
        entry = json.dumps({"until": until, "event": event.to_json()}, separators=(",", ":"))
        keys = [
            self.keys.correlation(workflow, *key),
            self.keys.waiting(workflow, *key),
            self.keys.waiting_due,
        ]
        live = self._hold(keys=keys, args=[entry, until])
        return live.decode() if live else None

    def held(self, workflow: str, key: tuple[str, str]) -> list[Event]:
        raw: list[bytes] = self.redis.lrange(self.keys.waiting(workflow, *key), 0, -1)  # type: ignore[assignment]
        return [Event.from_json(json.loads(entry)["event"]) for entry in raw]

    def expire_due(self, now: float, limit: int = 100) -> int:
        """Set aside the held events whose wait has ended, as dead letters."""
        reason = "no instance started within its wait, for "
        return int(
            self._expire(
                keys=[self.keys.waiting_due, self.keys.deadletters], args=[now, limit, reason]
            )
        )

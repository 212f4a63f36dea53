"""Filling Redis quickly with copies of one real finished instance.

Running a million instances through the engine would take hours; what the
scale workload needs is a Redis holding a million finished instances as the
engine leaves them. So one instance runs to its end for real, and a Lua
script copies it server-side under each new id: COPY (Redis 6.2) of its
hash, history archive and applied-ids set to the new id's own keys (its
partition's, built here by `orchestrator.store.keys.Keys`), time to live included;
the hash's `id` set to the new id; the id filed in the same indexes with the
same scores and the same `idx:expiring` member shape as the original. Key
count, index sizes and key shapes match real instances.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator.store.keys import Keys

# KEYS: idx:all, idx:workflow, idx:status, idx:state, idx:expiring
# ARGV: the original's hash, history and applied keys, created score, expiry score,
#       expiring-member head and tail, then per copy: id, hash key, history key, applied key
CLONE = """
local hash, history, applied = ARGV[1], ARGV[2], ARGV[3]
local created, expiry, head, tail = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local copies = 0
for i = 8, #ARGV, 4 do
  local id = ARGV[i]
  redis.call('COPY', hash, ARGV[i + 1])
  redis.call('HSET', ARGV[i + 1], 'id', id)
  redis.call('COPY', history, ARGV[i + 2])
  redis.call('COPY', applied, ARGV[i + 3])
  redis.call('ZADD', KEYS[1], created, id)
  redis.call('ZADD', KEYS[2], created, id)
  redis.call('SADD', KEYS[3], id)
  redis.call('SADD', KEYS[4], id)
  redis.call('ZADD', KEYS[5], expiry, head .. id .. tail)
  copies = copies + 1
end
return copies
"""
PER_CALL = 1000  # copies per script call
CALLS_PER_TRIP = 4  # script calls per pipelined round trip


@dataclass(frozen=True)
class Template:
    """What a copy needs of the original: its keys and its index entries."""

    args: list[Any]
    index_keys: list[str]


def template(admin: redis.Redis, keys: Keys, instance_id: str) -> Template:
    raw: Any = admin.hgetall(keys.instance(instance_id))
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    workflow, state, status = fields["workflow"], fields["state"], fields["status"]
    index_keys = [
        keys.all_instances,
        keys.by_workflow(workflow),
        keys.by_status(status),
        keys.by_state(workflow, state),
        keys.expiring,
    ]
    member = _expiring_member(admin, keys, instance_id)
    head, _, tail = member.partition(instance_id)
    created = admin.zscore(keys.all_instances, instance_id)
    expiry = admin.zscore(keys.expiring, member)
    originals = [keys.instance(instance_id), keys.archive(instance_id), keys.applied(instance_id)]
    ttls = [int(admin.pttl(key)) for key in originals]
    if created is None or expiry is None or min(ttls) <= 0:
        raise RuntimeError(f"instance {instance_id} is not a finished, expiring instance")
    return Template([*originals, created, expiry, head, tail], index_keys)


def preload(admin: redis.Redis, keys: Keys, original: Template, count: int, prefix: str) -> float:
    """Store `count` copies with ids PREFIX + a number; returns the seconds it took."""
    script = admin.register_script(CLONE)
    begin = time.perf_counter()
    pipe = admin.pipeline(transaction=False)
    for first in range(0, count, PER_CALL):
        copies: list[str] = []
        for number in range(first, min(first + PER_CALL, count)):
            instance_id = f"{prefix}{number:012x}"
            copies += [
                instance_id,
                keys.instance(instance_id),
                keys.archive(instance_id),
                keys.applied(instance_id),
            ]
        script(keys=original.index_keys, args=[*original.args, *copies], client=pipe)
        if len(pipe) >= CALLS_PER_TRIP:
            _check(pipe.execute())
    _check(pipe.execute())
    return time.perf_counter() - begin


def _expiring_member(admin: redis.Redis, keys: Keys, instance_id: str) -> str:
    for raw, _ in admin.zscan_iter(keys.expiring, match=f"*{instance_id}*"):
        return bytes(raw).decode()
    raise RuntimeError(f"instance {instance_id} is not in {keys.expiring}")


def _check(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply

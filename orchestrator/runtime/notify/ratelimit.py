"""Rate limits per channel, shared by every worker: a burst is smoothed, not rejected.

Each channel has a next-free-slot time in Redis. Taking a slot is one
script: it returns how long to wait before sending. A sender waits short
delays and hands long ones back to be scheduled, so no worker sleeps long.
ORCHESTRATOR_RATE_<CHANNEL> (messages per second) overrides a channel's default.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis

from notifiers.errors import ChannelConfigError
from orchestrator.store.keys import Keys

# KEYS: slot key; ARGV: now, interval. Returns the wait in seconds (as a string).
_TAKE = """
local now = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
redis.call('SET', KEYS[1], tostring(slot + tonumber(ARGV[2])), 'PX', 60000)
return tostring(slot - now)
"""


class RateLimits:
    def __init__(self, client: redis.Redis, keys: Keys, env: Mapping[str, str]) -> None:
        self.keys = keys
        self.env = env
        self._take = client.register_script(_TAKE)

    def per_second(self, channel: str, default: float) -> float:
        name = f"ORCHESTRATOR_RATE_{channel.upper()}"
        value = self.env.get(name)
        try:
            rate = float(value) if value else default
        except ValueError:
            rate = -1.0
        if rate < 0:
            raise ChannelConfigError(
                f"{name} must be a number of messages per second, not {value!r}"
            )
        return rate

    def wait(self, channel: str, default: float) -> float:
        """Take the channel's next slot; returns the seconds to wait before sending."""
        rate = self.per_second(channel, default)
        if rate <= 0:
            return 0.0
        return float(self._take(keys=[self.keys.rate(channel)], args=[time.time(), 1.0 / rate]))

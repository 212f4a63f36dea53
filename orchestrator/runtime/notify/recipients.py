"""Recipients and their preferences, kept in Redis.

A recipient has an id, an address per channel (email, sms, webhook), Web
Push subscriptions, the channels they opted out of, quiet hours in their
time zone (a non-urgent notification inside them waits until they end; an
urgent one is sent), and a locale that picks a template variant. A notify
`to` that names no recipient is taken as the address itself.

Addresses are checked when a recipient is saved (notifiers.addresses): an email
address with email-validator, a phone number with phonenumbers (kept in E.164),
a webhook URL as the webhook channel reads one. Delivery checks them again
before a send, for recipients saved before and for bare addresses.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis

from notifiers import addresses
from notifiers.errors import PermanentError
from notifiers.webhook import check_url
from orchestrator.core.errors import InputError, UnknownInstance
from orchestrator.store.keys import Keys

CHANNELS = ("email", "sms", "push", "webhook", "console")
# channel: how a message names the field (the CLI's option)
FIELDS = {"email": "--email address", "sms": "--phone number", "webhook": "--webhook URL"}
QUIET = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


@dataclass
class Recipient:
    id: str
    addresses: dict[str, str] = field(default_factory=dict)
    push: list[dict[str, Any]] = field(default_factory=list)
    opted_out: list[str] = field(default_factory=list)
    quiet_hours: str | None = None  # "22:00-07:00"
    timezone: str = "UTC"
    locale: str | None = None

    def check(self) -> Recipient:
        for channel in [*self.addresses, *self.opted_out]:
            if channel not in CHANNELS:
                raise InputError(f"unknown channel {channel!r} (channels: {', '.join(CHANNELS)})")
        for channel, address in list(self.addresses.items()):
            self.addresses[channel] = check_address(channel, address)
        match = QUIET.match(self.quiet_hours) if self.quiet_hours else None
        if self.quiet_hours and not match:
            raise InputError(f"quiet hours must look like 22:00-07:00, not {self.quiet_hours!r}")
        if match and match.group(1, 2) == match.group(3, 4):
            raise InputError(f"quiet hours {self.quiet_hours!r} start and end at the same time")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(f"unknown time zone {self.timezone!r}") from None
        for subscription in self.push:
            if not isinstance(subscription, dict) or "endpoint" not in subscription:
                raise InputError("a push subscription needs an endpoint and keys (p256dh, auth)")
        return self

    def quiet_until(self, now: datetime) -> datetime | None:
        """The end of the quiet hours `now` falls in, or None outside them."""
        if not self.quiet_hours:
            return None
        match = QUIET.match(self.quiet_hours)
        assert match is not None
        start = time(int(match[1]), int(match[2]))
        end = time(int(match[3]), int(match[4]))
        local = now.astimezone(ZoneInfo(self.timezone))
        clock = local.time().replace(tzinfo=None)
        inside = start <= clock < end if start < end else (clock >= start or clock < end)
        if not inside:
            return None
        end_today = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
        return end_today if end_today > local else end_today + timedelta(days=1)


def check_address(channel: str, address: str) -> str:
    """The address of `channel` checked (a phone number in E.164), or InputError in one line
    naming the field: --email, --phone or --webhook."""
    what = FIELDS.get(channel, f"{channel} address")
    try:
        if channel == "webhook":
            check_url(address)
            return address
        return addresses.check(channel, address, what)
    except PermanentError as exc:
        reason = exc.reason if exc.reason.startswith(what) else f"{what}: {exc.reason}"
        raise InputError(reason) from None


class Recipients:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def get(self, recipient_id: str) -> Recipient | None:
        return self.parse(self.redis.hget(self.keys.recipient(recipient_id), "data"))

    @staticmethod
    def parse(raw: object) -> Recipient | None:
        """A recipient from its stored data (read by `get`, or with a ledger claim)."""
        if not isinstance(raw, bytes):
            return None
        return Recipient(**json.loads(raw))

    def require(self, recipient_id: str) -> Recipient:
        found = self.get(recipient_id)
        if found is None:
            raise UnknownInstance(f"no recipient with id {recipient_id!r}")
        return found

    def save(self, recipient: Recipient) -> None:
        self._write(recipient.check())

    def _write(self, recipient: Recipient) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.recipient(recipient.id), "data", json.dumps(asdict(recipient)))
        pipe.sadd(self.keys.recipients, recipient.id)
        pipe.execute()

    def remove(self, recipient_id: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.recipient(recipient_id))
        pipe.srem(self.keys.recipients, recipient_id)
        deleted, _ = pipe.execute()
        return bool(deleted)

    def ids(self) -> list[str]:
        members: set[bytes] = self.redis.smembers(self.keys.recipients)  # type: ignore[assignment]
        return sorted(m.decode() for m in members)

    def drop_subscription(self, recipient_id: str, endpoint: str) -> None:
        """Forget a push subscription the push service said is gone (404/410)."""
        recipient = self.get(recipient_id)
        if recipient is not None:
            recipient.push = [s for s in recipient.push if s.get("endpoint") != endpoint]
            self._write(recipient)  # only the push list changed: nothing else to check

"""The console channel: prints a notification instead of sending it.

For development and the demo, and the stand-in for any channel that is not
configured (see notifiers.registry).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from notifiers.base import Delivery, Message, Notifier
from notifiers.redact import redact


class ConsoleNotifier(Notifier):
    channel = "console"

    def __init__(self, stands_in_for: str | None = None) -> None:
        self.stands_in_for = stands_in_for

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConsoleNotifier:
        return cls()

    def send(self, message: Message) -> Delivery:
        head = f"[{message.channel} -> {redact(message.to)}]"
        line = (
            f"{head} {message.subject}: {message.body}"
            if message.subject
            else f"{head} {message.body}"
        )
        print(line, flush=True)
        digest = hashlib.sha1(f"{message.key}:{message.to}".encode()).hexdigest()[:12]
        return Delivery(provider_id=f"console-{digest}", accepted=(message.to,))

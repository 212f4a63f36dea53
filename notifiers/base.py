"""What every channel shares: the message it is given, the delivery it returns,
and the shape of a notifier.

A notifier is one small class: it declares its channel name, reads its
configuration from the environment once (`from_env`), and does one thing in
`send`. It returns a typed `Delivery` or raises a typed error
(`notifiers.errors`); it never returns a bare bool that hides why.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class Message:
    """One rendered notification for one recipient on one channel."""

    channel: str
    to: str  # the channel's address: an email address, an E.164 number, a URL...
    body: str  # the text: the email's text part, the SMS, the push body
    subject: str = ""  # email subject, push title
    html: str | None = None  # email HTML part
    key: str = ""  # idempotency key: the same key is the same notification
    data: dict[str, Any] = field(default_factory=dict)  # extra fields for the channel
    push_subscription: dict[str, Any] | None = None  # a Web Push subscription (push only)


@dataclass(frozen=True)
class Delivery:
    """What the provider said when it took the message."""

    provider_id: str
    accepted: tuple[str, ...] = ()
    refused: dict[str, str] = field(default_factory=dict)  # recipient -> provider's reason
    warnings: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        return {
            "provider_id": self.provider_id,
            "accepted": list(self.accepted),
            "refused": dict(self.refused),
            "warnings": list(self.warnings),
        }


class Notifier(ABC):
    """Base of every channel. Subclasses set `channel` and implement `from_env` and `send`."""

    channel: ClassVar[str] = ""
    rate_per_second: ClassVar[float] = 0.0  # default rate limit; 0 = none

    @classmethod
    @abstractmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        """Build from the environment; ChannelConfigError names what is missing."""

    @abstractmethod
    def send(self, message: Message) -> Delivery:
        """Hand the message to the provider, or raise TransientError / PermanentError."""

    def close(self) -> None:  # noqa: B027  (most channels keep nothing open)
        """Release connections kept between sends."""


def secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE (its content, stripped)."""
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            from notifiers.errors import ChannelConfigError

            raise ChannelConfigError(f"{name}_FILE cannot be read ({exc.strerror})") from None
    return None


class Secret(str):
    """A string that never shows itself in repr, logs or JSON written with default=repr."""

    def __repr__(self) -> str:
        return "Secret('***')"

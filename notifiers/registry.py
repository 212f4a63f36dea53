"""The channel registry: channel name -> notifier class, imported only when used.

Vendor SDKs (twilio, pywebpush) load with their channel, so a process that
never sends an SMS never imports twilio. A channel that is not configured
falls back to the console with a warning, so development and the demo need
no credentials; ORCHESTRATOR_REQUIRE_CHANNELS=1 makes it a failure instead.

One process's notifiers may serve many threads at once (orchestrator.runtime.notify.batch):
email and SMS keep a connection per concurrent send, webhook opens one per
request, the console prints. Push keeps one lazily built HTTP session that
it does not guard, so its sends in one process go one at a time.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType

from notifiers.base import Notifier
from notifiers.errors import ChannelConfigError

log = logging.getLogger("notifiers")

# The channels this library ships, read-only: a process's notifiers are built from the
# settings it is given (Notifiers), never registered into a module global.
CHANNELS: Mapping[str, str] = MappingProxyType(
    {
        "email": "notifiers.email:EmailNotifier",
        "sms": "notifiers.sms:SmsNotifier",
        "push": "notifiers.push:PushNotifier",
        "webhook": "notifiers.webhook:WebhookNotifier",
        "console": "notifiers.console:ConsoleNotifier",
    }
)
ONE_AT_A_TIME = frozenset({"push"})  # channels whose notifier is not safe to share


def notifier_class(channel: str) -> type[Notifier]:
    try:
        path = CHANNELS[channel]
    except KeyError:
        known = ", ".join(sorted(CHANNELS))
        raise ChannelConfigError(f"unknown channel {channel!r} (channels: {known})") from None
    module, _, name = path.partition(":")
    try:
        found: type[Notifier] = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ChannelConfigError(
            f"channel {channel} needs a package that is not installed ({exc.name}): "
            f"pip install 'orchestrator[{channel}]'"
        ) from None
    return found


class Notifiers:
    """The notifiers of one process, built on first use and kept (connections are reused).

    `env` is the channels' settings (the variables each `from_env` reads, and
    ORCHESTRATOR_REQUIRE_CHANNELS), given by the process's composition root: nothing
    here reads the environment itself."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self._built: dict[str, tuple[Notifier, str | None]] = {}
        self._lock = threading.Lock()  # two threads never build the same channel twice
        self._serial = {channel: threading.Lock() for channel in ONE_AT_A_TIME}

    def get(self, channel: str) -> tuple[Notifier, str | None]:
        """The channel's notifier, and a warning when the console stands in for it."""
        found = self._built.get(channel)
        if found is None:
            with self._lock:
                found = self._built.get(channel)
                if found is None:
                    found = self._built[channel] = self._build(channel)
        return found

    @contextlib.contextmanager
    def sending(self, channel: str) -> Iterator[None]:
        """Held around a send: a channel that cannot send concurrently sends alone."""
        lock = self._serial.get(channel)
        if lock is None:
            yield
            return
        with lock:
            yield

    def _build(self, channel: str) -> tuple[Notifier, str | None]:
        cls = notifier_class(channel)
        try:
            return cls.from_env(self.env), None
        except ChannelConfigError as exc:
            if self.env.get("ORCHESTRATOR_REQUIRE_CHANNELS", "") in ("1", "true", "yes"):
                raise
            from notifiers.console import ConsoleNotifier

            warning = f"{channel} is not configured ({exc}); printed to the console instead"
            log.warning(warning)
            return ConsoleNotifier(stands_in_for=channel), warning

    def close(self) -> None:
        with self._lock:
            built, self._built = list(self._built.values()), {}
        for notifier, _ in built:
            notifier.close()

"""The console channel: prints a notification instead of sending it.

For development and the demo; every channel falls back to it until the real
channels are configured.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("notifiers.console")


class ConsoleNotifier:
    channel = "console"

    def send(self, channel: str, to: str, subject: str, body: str) -> dict[str, Any]:
        line = (
            f"[{channel} -> {to}] {subject}: {body}" if subject else f"[{channel} -> {to}] {body}"
        )
        print(line, flush=True)
        return {"ok": True, "provider_id": f"console:{abs(hash(line)) % 10**8}"}

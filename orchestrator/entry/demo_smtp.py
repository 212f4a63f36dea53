"""The demo's own SMTP server: receives the demo's emails on loopback and keeps them.

So `orchestrator demo` shows real email delivery (SMTP, multipart messages)
with nothing to set up. Not for production: no TLS, no AUTH, kept in memory.
"""

from __future__ import annotations

import socket
from email import message_from_bytes
from email.message import Message
from email.policy import default
from typing import Any


class DemoSmtpServer:
    def __init__(self) -> None:
        from aiosmtpd.controller import Controller  # only the demo needs an SMTP server

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.messages: list[Message] = []
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=default))
        return "250 OK"

    @property
    def env(self) -> dict[str, str]:
        return {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.port),
            "SMTP_SECURITY": "none",
            "SMTP_FROM": "Orchestrator demo <demo@orchestrator.invalid>",
        }

    def __enter__(self) -> DemoSmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

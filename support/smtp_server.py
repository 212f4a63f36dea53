"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, with TLS, AUTH and chosen refusals.

    with SmtpServer(tls="starttls") as server:
        notifier = EmailNotifier.from_env(server.env)
        ...
        server.messages[0].message["Subject"]

TLS uses a certificate for 127.0.0.1 and localhost signed by a CA made at
test time with trustme; `server.ca_file` (SMTP_CA_FILE in `server.env`) is
that CA, so clients verify the certificate for real. AUTH (PLAIN, LOGIN)
accepts only `server.username` / `server.password` and answers anything else
with 535. Recipients in `transient` are answered 451 at RCPT, those in
`permanent` 550; `data_reply` answers DATA instead of accepting the message;
`delay` seconds pass before DATA is answered (benchmarks); a client silent
for `idle_timeout` seconds is disconnected (after a 421 line, as Postfix
does, unless `idle_goodbye=False`). Everything accepted is kept in
`messages`, every RCPT tried in `rcpts`, every connection counted in
`connections`; stop() ends open connections, so nothing is left unclosed.

The server runs in a thread of the test process: a forked child (an RQ
work-horse) reaches it through its socket like any client.

It lives in support/ because the channel tests and the benchmarks
(bench.notify_providers, bench.chaos) both send to it; tests/smtp_faults.py
adds the faults only tests need. `smtp_server` is a pytest fixture for tests.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import tempfile
import threading
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

USERNAME = "mailer"
PASSWORD = "Tr0ub4dor-and-3-horses"  # distinctive, so a test can look for it anywhere


@dataclass(frozen=True)
class Received:
    """One message the server accepted, with its envelope."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    login: str | None  # the user the session authenticated as


class _Session(SMTP):
    """One client connection, known to the server until it is lost, so stop() can end it."""

    def __init__(self, owner: SmtpServer, **kwargs: Any) -> None:
        super().__init__(owner, **kwargs)
        self.owner = owner
        if owner.tls == "tls":
            self._auth_require_tls = False  # the whole connection is TLS; aiosmtpd cannot tell

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.owner.live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner.live.discard(self)
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        if self.owner.idle_goodbye and isinstance(self.transport, asyncio.WriteTransport):
            self.transport.write(b"421 4.4.2 Idle too long, closing connection\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def abort(self) -> None:
        for transport in (self.transport, self._original_transport):
            if isinstance(transport, asyncio.Transport):
                transport.abort()


class _Controller(Controller):
    """Listens on a socket bound beforehand (port 0: no race for a free port) and counts
    connections: aiosmtpd builds one SMTP protocol object per connection."""

    def __init__(self, owner: SmtpServer, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(owner, port=sock.getsockname()[1], **kwargs)
        self.owner = owner
        self.sock = sock

    def _create_server(self) -> Coroutine[Any, Any, asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self.sock, ssl=self.ssl_context)

    def factory(self) -> SMTP:
        with self.owner.lock:
            self.owner.connections += 1
        return _Session(self.owner, **self.SMTP_kwargs)


class SmtpServer:
    def __init__(
        self,
        tls: str = "starttls",
        *,
        auth: bool = True,
        delay: float = 0.0,
        transient: Iterable[str] = (),
        permanent: Iterable[str] = (),
        username: str = USERNAME,
        password: str = PASSWORD,
        names: tuple[str, ...] = ("127.0.0.1", "localhost"),
        idle_timeout: float = 300.0,
        idle_goodbye: bool = True,
        data_reply: str | None = None,
    ) -> None:
        if tls not in ("starttls", "tls", "none"):
            raise ValueError(f"tls is starttls, tls or none, not {tls!r}")
        self.tls = tls
        self.auth = auth and tls != "none"
        self.delay = delay
        self.transient = {a.lower() for a in transient}
        self.permanent = {a.lower() for a in permanent}
        self.username, self.password = username, password
        self.names = names  # what the certificate is issued for
        self.idle_timeout = idle_timeout  # seconds before the server drops a silent client
        self.idle_goodbye = idle_goodbye  # say "421" first, as Postfix does, or just close
        self.data_reply = data_reply  # answer DATA with this (e.g. "554 ...") and keep nothing
        self.host = "127.0.0.1"
        self.port = 0
        self.ca_file = ""  # written by start()
        self.messages: list[Received] = []
        self.rcpts: list[str] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.live: set[_Session] = set()  # touched only in the server's event loop
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._controller: _Controller | None = None

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="smtp-")
        ca = trustme.CA()
        self.ca_file = str(Path(self._folder.name) / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*self.names).configure_cert(context)
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "ready_timeout": 10.0,
            "timeout": self.idle_timeout,
        }
        if self.tls == "starttls":
            kwargs["tls_context"] = context
        elif self.tls == "tls":
            kwargs["ssl_context"] = context
        if self.auth:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        sock = socket.socket()
        sock.bind((self.host, 0))  # the server closes it when it stops
        self.port = int(sock.getsockname()[1])
        controller = _Controller(self, sock, **kwargs)
        try:
            controller.start()
        except BaseException:
            controller.stop(no_assert=True)
            sock.close()
            if not controller.loop.is_closed():
                controller.loop.close()
            self.stop()
            raise
        self._controller = controller
        with self.lock:
            self.connections = 0  # the controller's own start-up probe is not a client

    def stop(self) -> None:
        """End every open connection first: a transport left to the garbage collector
        is a ResourceWarning, an error under filterwarnings=error."""
        if self._controller is not None:
            asyncio.run_coroutine_threadsafe(self._disconnect(), self._controller.loop).result(10)
            self._controller.stop()
            self._controller = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    async def _disconnect(self) -> None:
        for session in list(self.live):
            session.abort()
        for _ in range(500):
            if not self.live:
                return
            await asyncio.sleep(0.01)

    # -- what a client needs ------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """The SMTP_* variables that point the email notifier at this server."""
        env = {
            "SMTP_HOST": self.host,
            "SMTP_PORT": str(self.port),
            "SMTP_SECURITY": self.tls,
            "SMTP_FROM": "Shop <shop@example.com>",
            "SMTP_TIMEOUT": "5",
        }
        if self.tls != "none":
            env["SMTP_CA_FILE"] = self.ca_file
        if self.auth:
            env.update(SMTP_USERNAME=self.username, SMTP_PASSWORD=self.password)
        return env

    # -- aiosmtpd handler hooks ---------------------------------------------------

    def _authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and (
            data.login.decode(errors="replace"),
            data.password.decode(errors="replace"),
        ) == (self.username, self.password):
            return AuthResult(success=True, auth_data=self.username)
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.rcpts.append(address)
        if address.lower() in self.transient:
            return "451 4.3.0 Mailbox busy, try again later"
        if address.lower() in self.permanent:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.data_reply:
            return self.data_reply
        raw = bytes(envelope.content)
        message = BytesParser(policy=default).parsebytes(raw)
        login = session.auth_data if session.authenticated else None
        received = Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), message, raw, login)
        with self.lock:
            self.messages.append(received)
        return "250 2.0.0 Message accepted"


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A STARTTLS + AUTH server for one test (import this fixture into a test module)."""
    with SmtpServer() as server:
        yield server

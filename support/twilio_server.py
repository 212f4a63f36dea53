"""A local stand-in for Twilio's Messages API, enough for the real `twilio` client.

    with TwilioServer(delay=0.1) as server:
        notifier = SmsNotifier.from_env(server.env)   # TWILIO_API_BASE points here
        ...
        server.messages[0]["To"]

`POST /2010-04-01/Accounts/{sid}/Messages.json` (form-encoded, Basic auth with
the account SID and token) is answered 201 with a message resource and a new
`SM...` sid, after `delay` seconds. Each connection has its own thread and
is kept alive (HTTP/1.1), as Twilio's servers keep them, so the concurrency a
client achieves is real and its connection reuse shows in `connections`. With `tls`
(a server-side SSLContext) it serves HTTPS, and `url` and `env` say https.
`together` holds the first requests until that many are inside at once (or
10 s passed), so a test can prove sends overlap without timing anything;
`most_at_once` is the most requests seen inside together.

Prism (support/prism.py) checks requests against Twilio's own description; this
server is for what Prism cannot do: answer late, and count under load. It lives
in support/ because the notification tests and the benchmarks (bench.soak,
bench.notify_providers) both use it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import threading
import time
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

SID = "AC" + "5ca1ab1e" * 4
TOKEN = "local-twilio-token"
HOLD_LIMIT = 10.0  # seconds a request waits for company at most


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # connections waiting to be accepted: socketserver's default is 5, and a client opening
    # many at once (a notification worker's sends as it starts) would have the rest dropped
    # and retried seconds later, which no real API server does (Linux allows 4,096)
    request_queue_size = 1024

    def __init__(self, owner: TwilioServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.owner.lock:
            self.owner.connections += 1
            self.owner.open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.owner.lock:
            self.owner.open.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the body goes out after the headers: no 40 ms stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        path = f"/2010-04-01/Accounts/{owner.sid}/Messages.json"
        if self.path != path:
            return self._answer(404, {"code": 20404, "message": "not found", "status": 404})
        expected = base64.b64encode(f"{owner.sid}:{owner.token}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            return self._answer(401, {"code": 20003, "message": "Authenticate", "status": 401})
        owner.enter()
        try:
            if owner.delay:
                time.sleep(owner.delay)
            sid = "SM" + uuid.uuid4().hex
            with owner.lock:
                owner.messages.append({**form, "sid": sid})
                owner.accepted_at.append(time.time())
        finally:
            owner.leave()
        self._answer(201, owner.resource(sid, form))

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class TwilioServer:
    def __init__(
        self,
        delay: float = 0.0,
        *,
        together: int = 0,
        sid: str = SID,
        token: str = TOKEN,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls`: a server-side context to serve HTTPS with (its certificate for 127.0.0.1)."""
        self.delay = delay
        self.tls = tls
        self.together = together
        self.sid, self.token = sid, token
        self.messages: list[dict[str, str]] = []  # the form of each message taken, and its sid
        self.accepted_at: list[float] = []  # when each was taken (the answer's start)
        self.connections = 0
        self.inside = 0
        self.most_at_once = 0
        self.lock = threading.Lock()
        self.company = threading.Condition(self.lock)
        self.open: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TwilioServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def env(self) -> dict[str, str]:
        """The TWILIO_* variables that point the SMS notifier here."""
        return {
            "TWILIO_ACCOUNT_SID": self.sid,
            "TWILIO_AUTH_TOKEN": self.token,
            "TWILIO_FROM": "+15005550001",
            "TWILIO_API_BASE": self.url,
            "TWILIO_TIMEOUT": "10",
        }

    def start(self) -> None:
        self._server = _Server(self)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and end the kept-alive connections, so no thread is left reading."""
        if self._server is None:
            return
        self._server.shutdown()
        with self.lock:
            sockets = list(self.open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 5
        while self.open and time.monotonic() < deadline:
            time.sleep(0.01)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def enter(self) -> None:
        with self.company:
            self.inside += 1
            self.most_at_once = max(self.most_at_once, self.inside)
            self.company.notify_all()
            if self.inside >= self.together:
                self.together = 0  # met once: nobody waits any more
            deadline = time.monotonic() + HOLD_LIMIT
            while self.inside < self.together and time.monotonic() < deadline:
                self.company.wait(deadline - time.monotonic())

    def leave(self) -> None:
        with self.company:
            self.inside -= 1

    def resource(self, sid: str, form: dict[str, str]) -> dict[str, Any]:
        """The message as Twilio's API returns it on creation (the fields the SDK reads)."""
        now = formatdate(usegmt=True)
        return {
            "sid": sid,
            "account_sid": self.sid,
            "to": form.get("To"),
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form.get("Body", ""),
            "status": "queued",
            "num_segments": "1",
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "uri": f"/2010-04-01/Accounts/{self.sid}/Messages/{sid}.json",
            "subresource_uris": {},
        }

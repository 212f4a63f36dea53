"""A real Web Push service on 127.0.0.1, and the browsers subscribed to it.

It does what a push service and a browser do between them, with nothing
mocked: `subscribe()` makes a browser's subscription (an ECDH P-256 key pair
and a 16-octet auth secret, RFC 8291); a POST to the endpoint must carry a
valid VAPID token (RFC 8292: ES256 signature checked with the key in `k`,
`aud` equal to this service's origin, `exp` in the next 24 hours, `sub`
present) and an aes128gcm body, which the service decrypts with the
browser's private key and records. `answer()` makes an endpoint refuse
(410, 404, 429 with Retry-After, 500, 413...) or stall, for the next N
messages or until told otherwise.

    with PushService() as service:
        browser = service.subscribe()
        ... send to browser.subscription ...
        assert service.received_by(browser)[0].json()["body"] == "hi"

It lives in support/ with the other providers' stand-ins (SMTP, Twilio,
Prism) that tests and benchmarks share.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece  # type: ignore[import-untyped]
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAX_BODY = 4096  # RFC 8030 section 7.2: larger messages may be refused with 413
MAX_EXP = 24 * 3600  # RFC 8292 section 2: exp no more than 24 hours ahead


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """One subscription, as the browser holds it: its keys never leave it."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    application_server_key: str | None = None  # the only VAPID key the service accepts

    @property
    def subscription(self) -> dict[str, Any]:
        """What PushSubscription.toJSON() gives the application server."""
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }


@dataclass(frozen=True)
class Received:
    """A push message the service took and the browser decrypted."""

    browser: str
    payload: bytes
    claims: dict[str, Any]
    vapid_key: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class _Script:
    status: int
    retry_after: str | None = None
    times: int | None = None  # None: until changed
    delay: float = 0.0


@dataclass
class _State:
    browsers: dict[str, Browser] = field(default_factory=dict)
    scripts: dict[str, _Script] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why requests failed verification
    answered: list[tuple[str, int]] = field(default_factory=list)  # (browser id, status)
    connections: int = 0


class PushService:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state = _State()
        self.closing = threading.Event()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.service = self
        host, port = self.server.server_address[:2]
        self.origin = f"http://{host!s}:{port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="push-service"
        )
        self.thread.start()

    def __enter__(self) -> PushService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, wake every handler, close every socket, join every thread."""
        if self.closing.is_set():
            return
        self.closing.set()
        self.server.shutdown()
        self.server.drop_connections()
        self.server.server_close()
        self.thread.join()

    # the browser side

    def subscribe(self, application_server_key: str | None = None) -> Browser:
        browser_id = uuid.uuid4().hex
        browser = Browser(
            id=browser_id,
            endpoint=f"{self.origin}/push/{browser_id}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth=os.urandom(16),
            application_server_key=application_server_key,
        )
        with self.lock:
            self.state.browsers[browser_id] = browser
        return browser

    def answer(
        self,
        browser: Browser,
        status: int = 201,
        *,
        retry_after: str | None = None,
        times: int | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer `status` (after `delay` seconds) to the next `times` messages (None: all)."""
        with self.lock:
            self.state.scripts[browser.id] = _Script(status, retry_after, times, delay)

    # what happened

    @property
    def received(self) -> list[Received]:
        with self.lock:
            return list(self.state.received)

    def received_by(self, browser: Browser) -> list[Received]:
        return [r for r in self.received if r.browser == browser.id]

    @property
    def refused(self) -> list[str]:
        with self.lock:
            return list(self.state.refused)

    @property
    def answered(self) -> list[tuple[str, int]]:
        with self.lock:
            return list(self.state.answered)

    @property
    def connections(self) -> int:
        with self.lock:
            return self.state.connections

    # the push service side (called from handler threads)

    def handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], str]:
        match = re.fullmatch(r"/push/([0-9a-f]+)", path)
        with self.lock:
            browser = self.state.browsers.get(match[1]) if match else None
        if browser is None:
            return self._answer("?", 404, {}, "no such subscription")
        try:
            claims, vapid_key = self._verify_vapid(headers.get("authorization", ""), browser)
        except _Refused as refusal:
            return self._refuse(browser, refusal)
        script = self._script(browser)
        if script is not None:
            if script.delay:
                self.closing.wait(script.delay)
            extra = {"Retry-After": script.retry_after} if script.retry_after else {}
            return self._answer(browser.id, script.status, extra, f"scripted {script.status}")
        if len(body) > MAX_BODY:
            return self._answer(browser.id, 413, {}, "payload too large")
        try:
            payload = self._decrypt(headers, body, browser)
        except _Refused as refusal:
            return self._refuse(browser, refusal)
        message = f"{self.origin}/message/{uuid.uuid4().hex}"
        with self.lock:
            self.state.received.append(
                Received(browser.id, payload, claims, vapid_key, dict(headers))
            )
        return self._answer(browser.id, 201, {"Location": message}, "")

    def _script(self, browser: Browser) -> _Script | None:
        with self.lock:
            script = self.state.scripts.get(browser.id)
            if script is None:
                return None
            if script.times is not None:
                script.times -= 1
                if script.times <= 0:
                    del self.state.scripts[browser.id]
            return script

    def _answer(
        self, browser_id: str, status: int, headers: dict[str, str], text: str
    ) -> tuple[int, dict[str, str], str]:
        with self.lock:
            self.state.answered.append((browser_id, status))
        return status, headers, text

    def _refuse(self, browser: Browser, refusal: _Refused) -> tuple[int, dict[str, str], str]:
        with self.lock:
            self.state.refused.append(refusal.reason)
        return self._answer(browser.id, refusal.status, {}, refusal.reason)

    def _verify_vapid(self, header: str, browser: Browser) -> tuple[dict[str, Any], str]:
        """RFC 8292: `vapid t=<JWT>, k=<key>`, the JWT signed ES256 by that key."""
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != "vapid":
            raise _Refused(401, f"no vapid authorization (got {scheme or 'none'!r})")
        params = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)
        token, key = params.get("t", ""), params.get("k", "")
        try:
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
        except ValueError:
            raise _Refused(401, "k is not a P-256 public key") from None
        if browser.application_server_key and key != browser.application_server_key:
            raise _Refused(403, "k is not the subscription's applicationServerKey")
        try:
            head_b64, claims_b64, signature_b64 = token.split(".")
            head = json.loads(unb64url(head_b64))
            claims = json.loads(unb64url(claims_b64))
            signature = unb64url(signature_b64)
        except ValueError:
            raise _Refused(401, "t is not a JWT") from None
        if head.get("alg") != "ES256" or len(signature) != 64:
            raise _Refused(403, f"JWT is not ES256 (alg {head.get('alg')!r})")
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        try:
            public_key.verify(
                encode_dss_signature(r, s),
                f"{head_b64}.{claims_b64}".encode(),
                ec.ECDSA(hashes.SHA256()),
            )
        except InvalidSignature:
            raise _Refused(403, "JWT signature does not verify with k") from None
        if claims.get("aud") != self.origin:
            raise _Refused(403, f"aud {claims.get('aud')!r} is not {self.origin!r}")
        now = time.time()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or not now < exp <= now + MAX_EXP + 60:
            raise _Refused(403, f"exp {exp!r} is not within the next 24 hours")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise _Refused(403, f"sub {sub!r} is not a mailto: or https: URL")
        return claims, key

    def _decrypt(self, headers: dict[str, str], body: bytes, browser: Browser) -> bytes:
        if headers.get("content-encoding") != "aes128gcm":
            raise _Refused(400, f"content-encoding {headers.get('content-encoding')!r}")
        if "ttl" not in headers:
            raise _Refused(400, "no TTL header")
        try:
            plain: bytes = http_ece.decrypt(
                body, private_key=browser.private_key, auth_secret=browser.auth, version="aes128gcm"
            )
        except Exception as exc:
            raise _Refused(400, f"cannot decrypt: {type(exc).__name__}: {exc}") from None
        return plain


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Server(ThreadingHTTPServer):
    """Joins its handler threads on close; keeps the sockets so close can wake them."""

    daemon_threads = False
    block_on_close = True
    service: PushService

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.open_lock:
            self.open.add(request)
        with self.service.lock:
            self.service.state.connections += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.open_lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Wake handlers waiting on a kept-alive connection: their next read sees EOF."""
        with self.open_lock:
            sockets = list(self.open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a notifier's session reuses its connection
    timeout = 10  # an idle kept-alive connection is dropped after this
    server: _Server

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None:
            self._reply(411, {}, "length required")
            return
        body = self.rfile.read(int(length))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, text = self.server.service.handle(self.path, headers, body)
        self._reply(status, extra, text)

    def _reply(self, status: int, headers: dict[str, str], text: str) -> None:
        data = text.encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass

"""`orchestrator serve` under ordinary load and against slow or greedy clients.

A real server on 127.0.0.1 (in a thread of this process, so its threads and
connections can be counted), real sockets, real Redis. Every loop is bounded
in count and in time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
import requests

from orchestrator.entry.bootstrap import App
from orchestrator.entry.http.app import MAX_BODY
from orchestrator.entry.http.config import ServerConfig
from orchestrator.entry.http.server import OrchestratorServer, make_server

EVENTS_KEY = "events-key-load-31f"
ENV = {"ORCHESTRATOR_EVENTS_SECRET": EVENTS_KEY}


@contextmanager
def serving(app: App, **limits: Any) -> Iterator[OrchestratorServer]:
    server = make_server(app, "127.0.0.1", 0, ServerConfig.from_env(ENV), **limits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def signed(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    timestamp = str(int(time.time()))
    mac = hmac.new(EVENTS_KEY.encode(), timestamp.encode() + b"." + raw, hashlib.sha256)
    return raw, {
        "Content-Type": "application/json",
        "X-Orchestrator-Timestamp": timestamp,
        "X-Orchestrator-Signature": f"sha256={mac.hexdigest()}",
    }


def post_event(server: OrchestratorServer, body: dict[str, Any]) -> requests.Response:
    raw, headers = signed(body)
    url = f"http://127.0.0.1:{server.server_port}/events"
    return requests.post(url, data=raw, headers={**headers, "Connection": "close"}, timeout=10)


def inbox_length(app: App) -> int:
    return sum(app.redis.xlen(app.keys.inbox(p)) for p in range(app.keys.partitions))


def wait_for(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_100_concurrent_signed_posts_are_all_answered(app: App) -> None:
    instance = app.client.start("counter")
    before = inbox_length(app)
    with serving(app) as server:
        # Given 100 clients, each with its own signed event, released at the same instant
        bodies = [{"type": "tick", "workflow": instance, "id": f"load-{i}"} for i in range(100)]
        gate = threading.Barrier(100, timeout=30)

        def one(body: dict[str, Any]) -> tuple[int | str, float]:
            raw, headers = signed(body)
            url = f"http://127.0.0.1:{server.server_port}/events"
            gate.wait()
            started = time.monotonic()
            try:
                answer = requests.post(url, data=raw, headers=headers, timeout=10)
            except requests.RequestException as exc:
                return type(exc).__name__, time.monotonic() - started
            return answer.status_code, time.monotonic() - started

        began = time.monotonic()
        with ThreadPoolExecutor(100) as pool:
            results = list(pool.map(one, bodies))
        took = time.monotonic() - began
    # Then every one is answered 202, within a few seconds even on a busy machine
    statuses = [status for status, _ in results]
    slowest = max(elapsed for _, elapsed in results)
    print(f"\n100 concurrent signed POSTs: {statuses.count(202)} answered 202 in {took:.2f}s")
    assert statuses == [202] * 100
    assert slowest < 5, f"the slowest answer took {slowest:.1f}s"
    assert inbox_length(app) == before + 100


class Trickler:
    """A client that sends a request's headers one byte at a time, and what it heard."""

    REQUEST = b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.opened = time.monotonic()
        self.sent = 0
        self.heard = b""
        self.closed_after: float | None = None

    def trickle(self) -> None:
        if self.closed_after is None and self.sent < len(self.REQUEST) - 3:  # never whole
            try:
                self.sent += self.sock.send(self.REQUEST[self.sent : self.sent + 1])
            except OSError:
                self.closed_after = time.monotonic() - self.opened

    def read(self) -> None:
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.heard += data
        if not data and self.closed_after is None:
            self.closed_after = time.monotonic() - self.opened


def test_slow_clients_are_cut_at_the_deadline_and_cannot_exhaust_the_server(app: App) -> None:
    instance = app.client.start("counter")
    threads_before = threading.active_count()
    with serving(app, request_timeout=2.0) as server, ExitStack() as stack:
        # Given 200 clients trickling their headers, a byte every 0.5 s
        clients = [Trickler(server.server_port) for _ in range(200)]
        selector = selectors.DefaultSelector()
        stack.callback(selector.close)
        for client in clients:
            stack.callback(client.sock.close)
            selector.register(client.sock, selectors.EVENT_READ, client)

        def pump(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for client in clients:
                    client.trickle()
                for key, _ in selector.select(timeout=min(0.5, max(0, end - time.monotonic()))):
                    key.data.read()
                    if key.data.closed_after is not None:
                        selector.unregister(key.fileobj)

        pump(1.0)
        # When a normal client comes while they hold their connections
        held_threads = threading.active_count()
        started = time.monotonic()
        answer = post_event(server, {"type": "tick", "workflow": instance})
        normal_took = time.monotonic() - started
        # Then it is answered at once, and the server did not grow a thread per client
        assert answer.status_code == 202
        assert normal_took < 1.0, f"a normal request took {normal_took:.2f}s"
        assert held_threads - threads_before < 50
        assert wait_for(lambda: server.open_connections == 200, 1)  # the normal one has left
        # And every slow client is answered 408 and cut at its 2 s deadline
        pump(3.0)
        cut = [c for c in clients if c.closed_after is not None]
        print(
            f"\n200 slow clients: normal request answered in {normal_took * 1000:.0f} ms; "
            f"threads +{held_threads - threads_before}; {len(cut)} cut, the last after "
            f"{max((c.closed_after or 0) for c in clients):.2f}s"
        )
        assert len(cut) == 200
        assert all(c.heard.split(b" ", 2)[1:2] == [b"408"] for c in clients)
        assert all((c.closed_after or 0) < 2.0 + 1.5 for c in clients)
        assert wait_for(lambda: server.open_connections == 0, 3)


def test_connections_over_the_cap_get_503_and_the_count_stays_bounded(app: App) -> None:
    with serving(app, max_connections=20, request_timeout=30) as server, ExitStack() as stack:
        # Given 60 clients that connect and say nothing
        socks = []
        for _ in range(60):
            sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
            stack.callback(sock.close)
            socks.append(sock)
        # Then 20 are held and 40 are answered 503 at once and closed
        answered: dict[socket.socket, bytes] = {}
        with selectors.DefaultSelector() as selector:
            for sock in socks:
                selector.register(sock, selectors.EVENT_READ, sock)
            deadline = time.monotonic() + 5
            while len(answered) < 40 and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.2):
                    selector.unregister(key.data)
                    answered[key.data] = key.data.makefile("rb").read()
            assert selector.select(timeout=0.3) == []  # no 41st answer
        refused = list(answered.values())
        held = [sock for sock in socks if sock not in answered]
        assert len(held) == 20
        assert len(refused) == 40
        assert all(answer.split(b" ", 2)[1:2] == [b"503"] for answer in refused)
        assert b"20 connections" in refused[0]
        assert server.open_connections == 20
        # And once the held ones leave, a new client is served
        for sock in held:
            sock.close()
        assert wait_for(lambda: server.open_connections == 0, 5)
        health = requests.get(f"http://127.0.0.1:{server.server_port}/health", timeout=5)
        assert health.status_code == 200


@pytest.mark.parametrize("length", [MAX_BODY + 1, 1_000_000, 10**12])
def test_a_body_over_the_limit_is_refused_before_it_is_sent(app: App, length: int) -> None:
    before = inbox_length(app)
    with serving(app) as server:
        _, headers = signed({"type": "tick"})
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        # When a client sends only the headers of a request with a huge Content-Length
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
            request = f"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{head}\r\n"
            sock.sendall(request.encode())
            started = time.monotonic()
            status_line = sock.makefile("rb").readline()
            took = time.monotonic() - started
        # Then the 413 arrives without a byte of the body sent, and nothing is written
        assert status_line.split(b" ", 2)[1:2] == [b"413"], status_line
        assert took < 2
        assert inbox_length(app) == before
        assert app.redis.keys(f"{app.keys.namespace}:seen-signature:*") == []

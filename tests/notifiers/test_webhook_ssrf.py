"""Webhooks refuse loopback, private, link-local and metadata addresses unless
WEBHOOK_ALLOW_PRIVATE=1, judged on the addresses the name resolves to and connected to."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from notifiers import webhook_guard
from notifiers.base import Message
from notifiers.errors import ChannelConfigError, PermanentError
from notifiers.webhook import WebhookNotifier

KEY = "whsec-ssrf-test"


def message(to: str) -> Message:
    return Message(channel="webhook", to=to, body="hi", key="k1", data={})


def notifier(**extra: str) -> WebhookNotifier:
    return WebhookNotifier.from_env({"WEBHOOK_SECRET": KEY, "WEBHOOK_TIMEOUT": "2", **extra})


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.hosts.append(self.headers.get("Host", ""))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    httpd.hosts = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


REFUSED = [
    ("http://127.0.0.1:{port}/hook", "loopback"),
    ("http://127.9.9.9:{port}/hook", "loopback"),
    ("http://localhost:{port}/hook", "loopback"),  # a name resolving to loopback
    ("http://2130706433:{port}/hook", "loopback"),  # 127.0.0.1 in decimal
    ("http://0177.0.0.1:{port}/hook", "loopback"),  # ... in octal
    ("http://0x7f.1:{port}/hook", "loopback"),  # ... in hex, short form
    ("http://[::1]:{port}/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]:{port}/hook", "loopback"),  # IPv4-mapped IPv6
    ("http://0.0.0.0:{port}/hook", "unspecified"),
]


@pytest.mark.parametrize(("url", "kind"), REFUSED)
def test_loopback_in_every_spelling_is_refused(
    server: ThreadingHTTPServer, url: str, kind: str
) -> None:
    to = url.format(port=server.server_port)
    with pytest.raises(PermanentError) as caught:
        notifier().send(message(to))
    assert caught.value.code == "private-address"
    assert f"is a {kind} address" in caught.value.reason
    assert "WEBHOOK_ALLOW_PRIVATE=1" in caught.value.reason
    assert server.hosts == []  # type: ignore[attr-defined]  # nothing reached it


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fd00:ec2::254", "cloud metadata"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fe80::1", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 of 169.254.169.254
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "non-public"),  # carrier NAT
        ("100.100.100.200", "cloud metadata"),
        ("::", "unspecified"),
    ],
)
def test_private_and_metadata_addresses_are_classed(address: str, kind: str) -> None:
    assert webhook_guard.address_class(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert webhook_guard.address_class(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://172.16.5.4/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[fc00::1]/hook",
        "https://[::ffff:192.168.0.1]/hook",
    ],
)
def test_private_urls_are_refused_before_connecting(url: str) -> None:
    with pytest.raises(PermanentError) as caught:
        notifier().send(message(url))
    assert caught.value.code == "private-address"
    assert "WEBHOOK_ALLOW_PRIVATE" in caught.value.reason


def test_a_name_is_checked_on_every_address_it_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a name with one public and one private address
    def fake(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(webhook_guard.socket, "getaddrinfo", fake)
    with pytest.raises(PermanentError) as caught:
        notifier().send(message("https://hooks.example.com/x"))
    assert "hooks.example.com (10.0.0.7) is a private address" in caught.value.reason


def test_the_connection_goes_to_the_checked_address_not_a_second_lookup(
    server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a name that answers 127.0.0.1 once, then something else (DNS rebinding)
    answers = iter(["127.0.0.1", "192.0.2.1"])
    looked_up: list[str] = []

    def rebinding(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        looked_up.append(host)
        address = next(answers)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(webhook_guard.socket, "getaddrinfo", rebinding)
    # When private addresses are refused: the first (and only) answer is checked and refused
    with pytest.raises(PermanentError, match="loopback"):
        notifier().send(message(f"http://rebind.example.com:{server.server_port}/h"))
    assert looked_up == ["rebind.example.com"]


def test_the_checked_address_is_connected_with_the_name_in_the_host_header(
    server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a name resolved to the local server, and a check that passes it
    calls: list[str] = []

    def resolved(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(webhook_guard.socket, "getaddrinfo", resolved)
    monkeypatch.setattr(webhook_guard, "address_class", lambda ip: None)
    # When a webhook is sent with the check on
    to = f"http://hooks.example.com:{server.server_port}/h"
    notifier().send(message(to))
    # Then the name was resolved once, and the receiver saw the name, not the address
    assert calls == ["hooks.example.com"]
    assert server.hosts == [f"hooks.example.com:{server.server_port}"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/h", "http://localhost:{port}/h"])
def test_allowed_with_the_variable(server: ThreadingHTTPServer, url: str) -> None:
    to = url.format(port=server.server_port)
    delivery = notifier(WEBHOOK_ALLOW_PRIVATE="1").send(message(to))
    assert delivery.accepted == (to,)
    assert server.hosts == [f"{to.split('/')[2]}"]  # type: ignore[attr-defined]


def test_the_variable_must_be_a_flag() -> None:
    assert notifier(WEBHOOK_ALLOW_PRIVATE="0").allow_private is False
    assert notifier(WEBHOOK_ALLOW_PRIVATE="true").allow_private is True
    with pytest.raises(ChannelConfigError, match="WEBHOOK_ALLOW_PRIVATE"):
        notifier(WEBHOOK_ALLOW_PRIVATE="maybe")


def test_the_channel_never_reads_the_environment(
    server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "1")
    with pytest.raises(PermanentError, match="loopback"):
        notifier().send(message(f"http://127.0.0.1:{server.server_port}/h"))

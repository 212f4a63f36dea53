"""Secrets never leak: after a run with authentication failures, unreachable
providers and crashing tasks, canary values for the SMTP password and the
Twilio token appear in no log line, no output, and no Redis key or value
(job fields and stored tracebacks included)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from orchestrator.entry.bootstrap import App
from orchestrator.entry.worker import run_burst
from orchestrator.store import archive
from support.smtp_server import SmtpServer

SMTP_CANARY = "smtp-canary-Qx81"
TWILIO_CANARY = "twilio-canary-Lm27"


def everything_in_redis(app: App) -> bytes:
    dump = bytearray()
    for key in app.redis.scan_iter(count=1000):
        dump += key
        kind = app.redis.type(key)
        if b":archive:" in key:  # a finished instance's history, compressed
            for entry in archive.unpack(app.redis.get(key)):  # type: ignore[arg-type]
                dump += "".join(entry.values()).encode()
        elif kind == b"string":
            dump += app.redis.get(key) or b""
        elif kind == b"hash":
            for field, value in app.redis.hgetall(key).items():
                dump += field + value
        elif kind == b"list":
            dump += b"".join(app.redis.lrange(key, 0, -1))
        elif kind == b"set":
            dump += b"".join(app.redis.smembers(key))
        elif kind == b"zset":
            dump += b"".join(app.redis.zrange(key, 0, -1))
        elif kind == b"stream":
            for _, fields in app.redis.xrange(key):
                for field, value in fields.items():
                    dump += field + value
    return bytes(dump)


def test_canaries_never_leak(
    app: App,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with SmtpServer(tls="starttls") as smtp:
        # Given an SMTP password the server refuses, and a Twilio host that is not there
        for name, value in {**smtp.env, "SMTP_PASSWORD": SMTP_CANARY}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", TWILIO_CANARY)
        monkeypatch.setenv("TWILIO_FROM", "+15005550006")
        monkeypatch.setenv("TWILIO_API_BASE", "http://127.0.0.1:9")
        monkeypatch.setenv("ORCHESTRATOR_REQUIRE_CHANNELS", "1")
        monkeypatch.setattr("orchestrator.runtime.context._installed", None)
        # When orders run (one of them crashes in a task) and try to notify
        with caplog.at_level(logging.DEBUG):
            for n, extra in enumerate([{}, {"card": "declined"}, {"address": "nowhere"}]):
                app.client.start(
                    "order",
                    {
                        "order_id": f"C{n}",
                        "email": "c@example.com",
                        "phone": "+15005550006",
                        "work_seconds": 0,
                        **extra,
                    },
                )
            run_burst(app)
    output = capfd.readouterr()
    # Then the notifications failed (so the secrets were used), and no canary shows anywhere
    failures = [
        h
        for i in app.client.list()
        for h in app.client.history(i.id)
        if h["event"]["type"] == "notification.failed"
    ]
    assert failures, "the run was meant to fail its sends"
    for canary in (SMTP_CANARY, TWILIO_CANARY):
        assert canary not in caplog.text
        assert canary not in output.out and canary not in output.err
        assert canary.encode() not in everything_in_redis(app)

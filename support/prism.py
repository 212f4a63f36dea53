"""Stoplight Prism as a test server: a provider's own OpenAPI description, served.

A channel's tests talk to Prism through the provider's real SDK, so what is
checked is the request the SDK puts on the wire (Prism validates it against
the provider's description and logs it) and how our code reads the answers
the description declares. Prism comes from npm (`npm ci` at the repo root
installs the version package-lock.json pins).

Prism only answers with status codes the description declares; a JSON Merge
Patch (RFC 7396) applied to a copy of the description (`patched_spec`) adds
the error responses a provider documents in prose only.

It lives in support/ because the channel tests and the chaos harness
(bench.chaos.cluster, for SMS) both serve Twilio's description with it.
Without Prism installed, a test is skipped (failed under CI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRISM = ROOT / "node_modules" / ".bin" / "prism"
START_TIMEOUT = 30.0


def prism_binary() -> Path:
    """The installed Prism, or a skip (a failure under CI, where it must be installed)."""
    hint = "Prism is not installed: run npm ci (or npm install) at the repository root"
    if not PRISM.exists() or shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail(hint)
        pytest.skip(hint)
    return PRISM


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def patched_spec(spec: Path, patch: Path, out: Path) -> Path:
    """Write `spec` with `patch` applied to `out` (the fixtures stay as published)."""
    document = merge_patch(json.loads(spec.read_text()), json.loads(patch.read_text()))
    out.write_text(json.dumps(document, indent=1))
    return out


@dataclass(frozen=True)
class Received:
    """One request as Prism logged it (debug level logs headers and body)."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    passed_validation: bool = False
    answered: bool = False  # Prism has logged its answer: the entry is complete

    def form(self) -> dict[str, str]:
        """The form-encoded body, one value per field."""
        return {k: v[-1] for k, v in parse_qs(self.body, keep_blank_values=True).items()}


_RECEIVED = re.compile(r"\[HTTP SERVER\] (\w+) (\S+) .*Request received")
_HEADER = re.compile(r"\[NEGOTIATOR\] .*debug\s+< \t([^:]+): (.*)$")
_BODY = re.compile(r"\[NEGOTIATOR\] .*debug\s+< Body: (.*)$")


@dataclass
class Prism:
    """A running `prism mock`: its base URL and what it has logged."""

    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def received(self) -> list[Received]:
        """Every request Prism has logged so far, oldest first."""
        found: list[dict[str, Any]] = []
        for line in self.log.read_text(errors="replace").splitlines():
            if m := _RECEIVED.search(line):
                found.append({"method": m[1].upper(), "path": m[2], "headers": {}, "body": ""})
            elif not found:
                continue
            elif m := _HEADER.search(line):
                found[-1]["headers"][m[1].lower()] = m[2]
            elif m := _BODY.search(line):
                found[-1]["body"] = m[1]
            elif "passed the validation rules" in line:
                found[-1]["passed_validation"] = True
            elif "Responding with" in line or "Request terminated" in line:
                found[-1]["answered"] = True
        return [Received(**r) for r in found]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """The log once it shows `count` answered requests (it is written a moment after)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()
            done = len(got) >= count and got[count - 1].answered
            if done or time.monotonic() > deadline:
                return got
            time.sleep(0.02)


@contextmanager
def prism_mock(spec: Path, port: int, log: Path) -> Iterator[Prism]:
    """Run `prism mock spec` on 127.0.0.1:port until the block ends."""
    binary = prism_binary()
    env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0", "SCARF_ANALYTICS": "false"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(binary),
                "mock",
                str(spec),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--verboseLevel",
                "debug",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
    prism = Prism(f"http://127.0.0.1:{port}", log, process)
    try:
        _wait_until_answering(prism)
        yield prism
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_until_answering(prism: Prism) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if prism.process.poll() is not None:
            tail = prism.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"prism exited with {prism.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{prism.url}/__ready", timeout=1):
                return
        except urllib.error.HTTPError as exc:  # any HTTP answer means it is serving
            exc.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"prism did not answer within {START_TIMEOUT}s") from None
            time.sleep(0.1)

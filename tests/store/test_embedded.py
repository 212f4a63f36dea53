"""The embedded Redis on a shared host: only this user's own server is ever used.

Each test runs the real CLI in subprocesses with no REDIS_URL, so the embedded
redis-server is started as a user would start it. Impostors are real
redis-servers too; as root, some run as another user (nobody, via setpriv).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.store.embedded import (
    RECORD,
    SOCKET_PATH_LIMIT,
    _ping,
    check_socket,
    redis_server_binary,
)
from tests.conftest import cli_env, run_cli

Env = dict[str, str]
NOBODY = 65534
as_root = pytest.mark.skipif(
    os.getuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root (and setpriv) to act as another user",
)


def stop_server(home: Path) -> None:
    """Stop the embedded Redis a test started, whatever state the test left it in."""
    pidfile = home / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"redis-server" in command:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def short_home(tmp_path: Path) -> Iterator[tuple[Env, Path]]:
    env = cli_env(None, tmp_path)
    home = tmp_path / "home"
    try:
        yield env, home
    finally:
        stop_server(home)


@pytest.fixture
def long_home(tmp_path: Path) -> Iterator[tuple[Env, Path]]:
    home = tmp_path / ("d" * 60) / ("e" * 60) / "home"
    assert len(str(home / "run" / "redis.sock")) > SOCKET_PATH_LIMIT
    env = cli_env(None, tmp_path, ORCHESTRATOR_HOME=str(home))
    try:
        yield env, home
    finally:
        stop_server(home)
        with contextlib.suppress(OSError):
            shutil.rmtree(Path((home / RECORD).read_text().strip()))


class Impostor:
    """A real redis-server listening on a Unix socket, perhaps as another user."""

    def __init__(self, sock: Path, uid: int | None = None) -> None:
        self.sock = sock
        prefix = [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={uid}"]
        prefix += ["--clear-groups"] if uid is not None else []
        self.process = subprocess.Popen(
            [
                *prefix,
                redis_server_binary(),
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "777",
                "--dir",
                str(sock.parent),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "the impostor did not start"
            time.sleep(0.02)
        self.client = redis.Redis(unix_socket_path=str(sock))
        self.client.ping()

    def keys(self) -> list[bytes]:
        found: list[bytes] = self.client.keys("*")  # type: ignore[assignment]
        return found

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)


def folder_of_nobody() -> Path:
    """A folder another user (nobody) may write, in the shared temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="impostor-"))
    os.chown(folder, NOBODY, NOBODY)
    return folder


def user_error(*args: str, env: Env) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 1, f"{args}: {result.returncode} {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def started(env: Env) -> str:
    result = run_cli("start", "counter", env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def private_mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- where the socket lives ----------------------------------------------------------


def test_the_socket_lives_in_a_private_folder_of_the_data_folder(
    short_home: tuple[Env, Path],
) -> None:
    env, home = short_home
    started(env)
    sock = home / "run" / "redis.sock"
    info = os.lstat(sock)
    assert stat.S_ISSOCK(info.st_mode) and info.st_uid == os.getuid()
    assert private_mode(sock.parent) == 0o700 and os.lstat(sock.parent).st_uid == os.getuid()
    assert private_mode(home) == 0o700  # a new data folder is private too (it holds the AOF)
    assert f"url: unix://{sock}" in run_cli("server", "info", env=env).stdout


def test_a_long_data_folder_gets_an_unpredictable_private_socket_folder(
    long_home: tuple[Env, Path],
) -> None:
    env, home = long_home
    instance = started(env)
    folder = Path((home / RECORD).read_text().strip())
    assert folder.parent == Path(tempfile.gettempdir())
    assert private_mode(folder) == 0o700 and os.lstat(folder).st_uid == os.getuid()
    assert stat.S_ISSOCK(os.lstat(folder / "redis.sock").st_mode)
    digest = hashlib.sha1(str(home).encode()).hexdigest()[:16]
    assert digest not in str(folder)  # not derived from the data folder's path
    # a second process finds the same server through the record
    result = run_cli("status", instance, "--json", env=env)
    assert result.returncode == 0 and instance in result.stdout


def test_an_impostor_at_the_old_predictable_path_is_never_used(
    long_home: tuple[Env, Path],
) -> None:
    """The old code put a long data folder's socket at /tmp/orchestrator-<sha1>.sock and
    used whatever answered there."""
    env, home = long_home
    digest = hashlib.sha1(str(home).encode()).hexdigest()[:16]
    predictable = Path(tempfile.gettempdir()) / f"orchestrator-{digest}.sock"
    impostor = Impostor(predictable)
    try:
        instance = started(env)
        assert impostor.keys() == []  # nothing was written to the impostor
        result = run_cli("status", instance, "--json", env=env)
        assert result.returncode == 0, result.stderr
        assert impostor.keys() == []
    finally:
        impostor.close()
        predictable.unlink(missing_ok=True)


# -- what is refused ---------------------------------------------------------------------


def test_a_socket_folder_open_to_others_is_refused(short_home: tuple[Env, Path]) -> None:
    env, home = short_home
    instance = started(env)
    (home / "run").chmod(0o755)
    try:
        line = user_error("status", instance, env=env)
        assert "refusing the embedded Redis" in line and str(home / "run") in line
        assert "mode is 0755" in line and "0700 is needed" in line
    finally:
        (home / "run").chmod(0o700)
    assert run_cli("status", instance, env=env).returncode == 0


def test_a_socket_folder_that_is_a_symbolic_link_is_refused(
    short_home: tuple[Env, Path], tmp_path: Path
) -> None:
    env, home = short_home
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    impostor = Impostor(elsewhere / "redis.sock")
    try:
        home.mkdir(mode=0o700)
        (home / "run").symlink_to(elsewhere)
        line = user_error("list", env=env)
        assert "symbolic link" in line and str(home / "run") in line
        assert impostor.keys() == []
    finally:
        impostor.close()


@as_root
def test_a_socket_folder_of_another_user_is_refused(short_home: tuple[Env, Path]) -> None:
    env, home = short_home
    home.mkdir(mode=0o700)
    (home / "run").mkdir(mode=0o700)
    os.chown(home / "run", NOBODY, NOBODY)
    line = user_error("list", env=env)
    assert f"belongs to uid {NOBODY}, not to this user" in line
    assert "impersonating" in line


@as_root
def test_a_server_of_another_user_is_refused_even_behind_a_socket_of_ours(
    short_home: tuple[Env, Path],
) -> None:
    """The socket file and its folder look right; the process answering is nobody's."""
    env, home = short_home
    home.mkdir(mode=0o700)
    (home / "run").mkdir(mode=0o700)
    theirs = folder_of_nobody()
    impostor = Impostor(theirs / "redis.sock", uid=NOBODY)
    try:
        sock = home / "run" / "redis.sock"
        os.rename(theirs / "redis.sock", sock)  # the impostor still listens on it
        os.chown(sock, os.getuid(), os.getgid())
        sock.chmod(0o700)
        line = user_error("list", env=env)
        assert f"runs as uid {NOBODY}" in line and "not as this user" in line
        assert impostor.keys() == []
    finally:
        impostor.close()
        shutil.rmtree(theirs, ignore_errors=True)


@as_root
def test_a_recorded_socket_folder_of_another_user_is_refused(
    long_home: tuple[Env, Path],
) -> None:
    env, home = long_home
    theirs = folder_of_nobody()
    theirs.chmod(0o700)
    impostor = Impostor(theirs / "redis.sock", uid=NOBODY)
    try:
        home.mkdir(parents=True, mode=0o700)
        (home / RECORD).write_text(f"{theirs}\n")
        line = user_error("list", env=env)
        assert str(theirs) in line and f"belongs to uid {NOBODY}" in line
        assert f"remove {home / RECORD}" in line
        assert impostor.keys() == []
    finally:
        impostor.close()
        shutil.rmtree(theirs, ignore_errors=True)


# -- upgrades and cleaners ----------------------------------------------------------------


def test_a_server_of_the_old_layout_is_replaced_without_losing_data(
    short_home: tuple[Env, Path],
) -> None:
    """A server an older version started (socket in the data folder itself) is ended
    before the new one starts: two servers must never share one append-only file."""
    env, home = short_home
    home.mkdir(mode=0o700)
    old_sock = home / "redis.sock"
    subprocess.run(
        [
            redis_server_binary(),
            *("--port", "0", "--unixsocket", str(old_sock), "--unixsocketperm", "700"),
            *("--dir", str(home), "--appendonly", "yes", "--save", ""),
            *("--daemonize", "yes", "--pidfile", str(home / "redis.pid")),
            *("--logfile", str(home / "redis.log")),
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while not old_sock.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    old = redis.Redis(unix_socket_path=str(old_sock))
    old.set("written-before-the-upgrade", "yes")
    old_pid = int(old.info("server")["process_id"])
    old.close()

    assert run_cli("list", env=env).returncode == 0
    assert not Path(f"/proc/{old_pid}").exists() or b"redis-server" not in (
        Path(f"/proc/{old_pid}/cmdline").read_bytes()
    )
    new = redis.Redis(unix_socket_path=str(home / "run" / "redis.sock"))
    assert new.get("written-before-the-upgrade") == b"yes"
    assert int(new.info("server")["process_id"]) != old_pid
    new.close()


def test_a_socket_folder_removed_by_a_cleaner_is_made_again(
    long_home: tuple[Env, Path],
) -> None:
    env, home = long_home
    instance = started(env)
    first = Path((home / RECORD).read_text().strip())
    shutil.rmtree(first)  # as systemd-tmpfiles may, while the server runs
    result = run_cli("status", instance, "--json", env=env)
    assert result.returncode == 0 and instance in result.stdout, result.stderr  # data kept
    second = Path((home / RECORD).read_text().strip())
    assert second != first and private_mode(second) == 0o700


def test_a_socket_not_yet_listening_is_waited_for_not_refused(tmp_path: Path) -> None:
    # Given a socket in a private folder as redis-server leaves it between its bind and its
    # chmod to 0700: bound, not listening, its mode from the umask (a race seen in CI)
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    path = folder / "redis.sock"
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        bound.bind(str(path))
        path.chmod(0o755)
        # Then whoever waits for the server sees nobody answering yet, and goes on waiting
        assert _ping(path) == "none"
        # (while the socket, checked alone, is refused: only a listening one is final)
        with pytest.raises(Exception, match="mode is 0755"):
            check_socket(path)
    finally:
        bound.close()

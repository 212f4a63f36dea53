"""Committing sends' answers together (orchestrator.runtime.notify.commits) against a real
Redis: transactions ready at the same time go in one MULTI/EXEC, and each still commits,
or fails, as it would alone.

Several are made ready at once by handing a group to the committing step itself
(`_run`): from threads, which ones end up together depends on timing.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import redis

from orchestrator.runtime.notify.commits import Commits, _Ready
from orchestrator.store.commit import commit


@pytest.fixture
def prefix() -> str:
    return f"test-commits-{uuid.uuid4().hex[:8]}"


def ready(client: redis.Redis, *commands: tuple[str, ...]) -> _Ready:
    pipe = commit(client)
    for command in commands:
        pipe.execute_command(*command)  # type: ignore[no-untyped-call]
    return _Ready(pipe)


class Counted(redis.Connection):
    """A connection counting the MULTIs it sends: this client's own, where the server's
    statistics would count other tests' too (a shared server under REDIS_URL)."""

    multis = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, (bytes, str)) else command
        raw = [c.encode() if isinstance(c, str) else bytes(c) for c in chunks]
        Counted.multis += sum(c.count(b"$5\r\nMULTI\r\n") for c in raw)
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def test_transactions_ready_together_commit_in_one_multi(
    redis_server: str, client: redis.Redis, prefix: str
) -> None:
    counted = redis.Redis.from_url(redis_server, connection_class=Counted)
    group = [
        ready(counted, ("SET", f"{prefix}:{n}", str(n)), ("INCR", f"{prefix}:n")) for n in range(3)
    ]
    before = Counted.multis
    Commits(counted)._run(group)
    counted.close()
    assert Counted.multis - before == 1
    assert all(r.done.is_set() and r.error is None for r in group)
    assert [client.get(f"{prefix}:{n}") for n in range(3)] == [b"0", b"1", b"2"]
    assert client.get(f"{prefix}:n") == b"3"


def test_a_command_failing_as_it_runs_fails_its_own_transaction_only(
    client: redis.Redis, prefix: str
) -> None:
    client.set(f"{prefix}:text", "not a list")
    good = ready(client, ("SET", f"{prefix}:a", "1"))
    bad = ready(client, ("SET", f"{prefix}:b", "1"), ("LPUSH", f"{prefix}:text", "x"))
    after = ready(client, ("SET", f"{prefix}:c", "1"))
    Commits(client)._run([good, bad, after])
    assert good.error is None and after.error is None
    assert isinstance(bad.error, redis.ResponseError)
    assert "WRONGTYPE" in str(bad.error)
    assert "Command # 2" in str(bad.error)  # its own numbering, as its own execute says
    assert client.get(f"{prefix}:a") == client.get(f"{prefix}:c") == b"1"


def test_a_command_refused_as_it_is_queued_fails_alone_and_the_others_commit(
    client: redis.Redis, prefix: str
) -> None:
    good = ready(client, ("SET", f"{prefix}:a", "1"))
    bad = ready(client, ("SET", f"{prefix}:b", "1"), ("GET",))  # wrong arity: EXECABORT
    after = ready(client, ("SET", f"{prefix}:c", "1"))
    Commits(client)._run([good, bad, after])
    assert good.error is None and after.error is None
    assert isinstance(bad.error, redis.ResponseError)
    assert client.get(f"{prefix}:a") == client.get(f"{prefix}:c") == b"1"
    assert client.get(f"{prefix}:b") is None  # its transaction is whole: nothing of it ran


def test_threads_committing_at_once_each_return_once_committed(
    client: redis.Redis, prefix: str
) -> None:
    commits = Commits(client)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def one(n: int) -> None:
        pipe = commit(client)
        pipe.set(f"{prefix}:{n}", str(n))
        start.wait()
        try:
            commits.commit(pipe)
            assert client.get(f"{prefix}:{n}") == str(n).encode()  # committed on return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert [client.get(f"{prefix}:{n}") for n in range(8)] == [str(n).encode() for n in range(8)]

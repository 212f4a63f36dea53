"""The applier's commit (orchestrator.store.commit): what redis-py's own transaction does,
on a real server, for every way a transaction ends: committed, a command refused when
queued (nothing written), a command failing when run (the others written, the error
raised), a watched key changed (nothing written), a lost connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.client import Pipeline

from orchestrator.entry.connection import tune
from orchestrator.store.commit import commit

Script = Callable[[Pipeline], None]


def committed(pipe: Pipeline) -> None:
    pipe.hset("{k}:inst", mapping={"state": "second", "seq": "2"})
    pipe.sadd("{k}:applied", "e1", "e2")
    pipe.xadd("{k}:history", {"seq": "2", "event": "{}"})
    pipe.rpush("{k}:queue", "job")


def refused_when_queued(pipe: Pipeline) -> None:
    pipe.set("{k}:before", "1")
    pipe.execute_command("SET", "{k}:wrong")  # wrong number of arguments: refused at once
    pipe.set("{k}:after", "1")


def failing_when_run(pipe: Pipeline) -> None:
    pipe.set("{k}:before", "1")
    pipe.sadd("{k}:string", "member")  # WRONGTYPE: the key holds a string
    pipe.set("{k}:after", "1")


def outcome(client: redis.Redis, pipe: Pipeline, script: Script, watch: bool) -> Any:
    """What the transaction raised or returned, and what the server holds afterwards."""
    client.set("{k}:string", "s")
    client.set("{k}:lease", "mine")
    try:
        with pipe:
            if watch:
                pipe.watch("{k}:lease")
                client.set("{k}:lease", "theirs")  # another client takes the lease
            pipe.multi()
            script(pipe)
            result: Any = ("returned", len(pipe.execute()))
    except redis.RedisError as exc:
        result = ("raised", type(exc).__name__, str(exc))
    held = sorted(k.decode() for k in client.keys("{k}:*"))
    client.delete(*client.keys("{k}:*"))
    return result, held


@pytest.mark.parametrize("script", [committed, refused_when_queued, failing_when_run])
@pytest.mark.parametrize("watch", [False, True], ids=["unwatched", "watched-and-changed"])
def test_a_commit_ends_as_redis_pys_transaction_does(
    redis_url: str, script: Script, watch: bool
) -> None:
    client = redis.Redis.from_url(redis_url)
    tune(client)
    theirs = outcome(client, client.pipeline(transaction=True), script, watch)
    ours = outcome(client, commit(client), script, watch)
    assert ours == theirs
    if not watch and script is committed:
        assert theirs == (
            ("returned", 4),
            ["{k}:applied", "{k}:history", "{k}:inst", "{k}:lease", "{k}:queue", "{k}:string"],
        )
    if watch:  # nothing written: the watched lease changed
        assert theirs[1] == ["{k}:lease", "{k}:string"]


def test_the_replies_are_the_servers_own(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with commit(client) as pipe:
        pipe.multi()
        pipe.set("a", "1")
        pipe.sadd("s", "x", "y")
        pipe.get("a")
        assert pipe.execute() == [b"OK", 2, b"1"]


@pytest.mark.parametrize("kind", ["redis-py", "commit"])
def test_a_connection_lost_before_exec_writes_nothing(redis_url: str, kind: str) -> None:
    """As with redis-py's transaction, a watching pipeline whose connection dies raises
    WatchError (the applier then lets its partitions go, and reads them again)."""
    client = redis.Redis.from_url(redis_url)
    killer = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=True) if kind == "redis-py" else commit(client)
    with pipe:
        pipe.watch("lease")  # the pipeline holds its connection from here
        pipe.multi()
        pipe.set("written", "1")
        killer.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(redis.WatchError, match="ConnectionError"):
            pipe.execute()
    assert client.exists("written") == 0


def test_watch_and_read_is_one_round_trip_and_the_watch_holds(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    admin = redis.Redis.from_url(redis_url)  # its own connection, open before counting
    client.set("lease", "mine")
    client.hset("inst", mapping={"state": "one"})
    client.set("string", "s")
    with commit(client) as pipe:
        reads = admin.info("stats")["total_reads_processed"]
        replies = pipe.watch_and_read(
            ["lease"], [("GET", "lease"), ("HGETALL", "inst"), ("HGETALL", "string")]
        )
        # WATCH and three reads in one request: the server read it once (and the INFO)
        assert admin.info("stats")["total_reads_processed"] - reads == 2
        # the replies as the server sent them; an error reply in its place, not raised
        assert replies[0] == b"mine"
        assert replies[1] in ({b"state": b"one"}, [b"state", b"one"])  # RESP3, RESP2
        assert isinstance(replies[2], redis.ResponseError)
        assert "WRONGTYPE" in str(replies[2])
        # and the WATCH holds: another client's write to the lease fails the transaction
        client.set("lease", "theirs")
        pipe.multi()
        pipe.set("written", "1")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert client.exists("written") == 0


def test_watch_and_read_opens_a_connection_found_closed_again(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    killer = redis.Redis.from_url(redis_url)
    client.set("lease", "mine")
    client.ping()  # a pooled connection, then closed by the server (a restart, a kill)
    killer.client_kill_filter(_type="normal", skipme=True)
    with commit(client) as pipe:
        assert pipe.watch_and_read(["lease"], [("GET", "lease")]) == [b"mine"]
        pipe.multi()
        pipe.set("written", "1")
        assert pipe.execute() == [b"OK"]
    assert client.get("written") == b"1"

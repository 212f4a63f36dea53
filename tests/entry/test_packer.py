"""The command packer the engine's clients use (orchestrator.entry.packer): the bytes
redis-py's own packer writes, for what hiredis takes; redis-py's packer, and its
refusals, for the rest; and a real server reading them back."""

from __future__ import annotations

import pytest
import redis
from redis.connection import PythonRespSerializer
from redis.exceptions import DataError

from orchestrator.entry.connection import connect
from orchestrator.entry.packer import BUFFER_CUTOFF, CommandPacker
from orchestrator.entry.settings import Settings

redis_py = PythonRespSerializer(
    BUFFER_CUTOFF, redis.connection.Encoder("utf-8", "strict", False).encode
)  # type: ignore[attr-defined]

COMMANDS = [
    ("SET", "key", "value"),
    ("HSET", "h", "f", "é 中", "n", 12, "x", 1.5, "y", 0.1, "z", -7),
    ("XADD", b"stream", "MAXLEN", "~", 100000, "*", "0", '{"a": 1}'),
    ("ZADD", "z", 1796617123.0252013, "member"),
    ("SET", b"k", memoryview(b"viewed")),
    ("CLIENT SETINFO", "LIB-NAME", "redis-py"),  # a command name of two words
    ("SET", "k", bytearray(b"array")),  # a type hiredis does not take
]


@pytest.mark.parametrize(
    "args", COMMANDS, ids=[str(c[0]) + f"-{i}" for i, c in enumerate(COMMANDS)]
)
def test_the_bytes_are_those_redis_py_writes(args: tuple[object, ...]) -> None:
    assert b"".join(CommandPacker().pack(*args)) == b"".join(redis_py.pack(*args))


@pytest.mark.parametrize("value", [True, None, object()])
def test_what_redis_py_refuses_is_refused_alike(value: object) -> None:
    with pytest.raises(DataError) as ours:
        CommandPacker().pack("SET", "k", value)
    with pytest.raises(DataError) as theirs:
        redis_py.pack("SET", "k", value)
    assert str(ours.value) == str(theirs.value)


def test_the_engine_s_clients_use_it_and_the_server_reads_what_it_writes(
    redis_url: str,
) -> None:
    client = connect(Settings(redis_url=redis_url))
    assert isinstance(client.connection_pool.connection_kwargs["command_packer"], CommandPacker)
    pipe = client.pipeline(transaction=True)
    pipe.hset("packer:h", mapping={"text": "é 中", "int": 12, "float": 0.1, "bytes": b"\x00\xff"})
    pipe.hgetall("packer:h")
    pipe.delete("packer:h")
    _, stored, _ = pipe.execute()
    assert stored == {
        b"text": "é 中".encode(),
        b"int": b"12",
        b"float": b"0.1",
        b"bytes": b"\x00\xff",
    }
    with pytest.raises(DataError):
        client.set("packer:k", True)  # type: ignore[arg-type]


def test_a_client_encoding_otherwise_keeps_redis_py_s_packer(redis_url: str) -> None:
    from orchestrator.entry.connection import tune

    client = tune(redis.Redis.from_url(redis_url, encoding="latin-1"))
    assert "command_packer" not in client.connection_pool.connection_kwargs

"""How commands are written on the wire: hiredis packs each one in C, as redis-py did
before version 8.

redis-py 8 runs every argument through its Encoder in a Python generator before
hiredis packs the command (to accept memoryview and bytearray arguments, and to apply
the client's encoding). The applier's commit is hundreds of commands of a dozen
arguments each, so that loop became the applier's largest cost: measured with
`python -m bench --only applier --repeat 3` on this 2-core machine, one applier
applied 18,200-18,600 events/s with redis-py 8.2's packer, 23,900-27,800 with redis-py
6.4's (which handed the arguments to hiredis as they were), and under cProfile packing
took 39% of the applier's time against 10%. No option of redis-py turns that loop
off; its connections take a `command_packer`, which is what this is.

hiredis packs str (as UTF-8), bytes, memoryview, int and float; anything else (a bool,
None, a bytearray) and a command name of several words ("CLIENT SETINFO") go to
redis-py's own Python packer, so its refusals (DataError naming the type) and its rules
stay as they are. Installed only for clients that encode as UTF-8, hiredis's
encoding (orchestrator.entry.connection).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hiredis
from redis._parsers.encoders import Encoder  # the client's own; not re-exported elsewhere
from redis.connection import PythonRespSerializer

BUFFER_CUTOFF = 6000  # redis-py's own, for its fallback packer's large values


class CommandPacker:
    """A connection's `command_packer`: hiredis for the common case, redis-py's own
    packer for the rest."""

    def __init__(self, encoding_errors: str = "strict") -> None:
        encode = Encoder("utf-8", encoding_errors, False).encode  # type: ignore[no-untyped-call]
        self._fallback: Callable[..., list[bytes]] = PythonRespSerializer(
            BUFFER_CUTOFF, encode
        ).pack

    def pack(self, *args: Any) -> list[bytes]:
        name = args[0]
        if (b" " if isinstance(name, bytes) else " ") in name:
            return self._fallback(*args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type hiredis does not take: redis-py's packer says what
            return self._fallback(*args)

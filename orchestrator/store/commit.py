"""The applier's commit: a MULTI/EXEC pipeline that reads its replies off the connection.

redis-py's transaction reads each command's QUEUED reply through two layers of its
client (the pipeline's `parse_response`, then the client's, which look up response
callbacks that a QUEUED reply never needs) before the connection's `read_response`.
The applier's commit is hundreds of commands, and those layers cost more than the
reading itself: measured on a private server, a transaction of 400 HSETs and SADDs
built and executed took 4.5-4.8 us of CPU a command through redis-py's pipeline and
3.2-3.7 through this one.

Its WATCH can go out with the reads that the transaction depends on (`watch_and_read`):
redis-py sends WATCH in a round trip of its own, and the applier's reads of a batch went
in another on a second connection; a lone event's step is one round trip shorter.

Everything else is redis-py's: MULTI, packing, a queueing error annotated and
raised, ExecAbortError, WatchError when a watched key changed, the connection's own
error handling and retries (`Pipeline.execute`). The replies are returned as the
server sent them, without response callbacks: for commits whose replies nobody reads.
A command that needs special handling (redis-py's EMPTY_RESPONSE option) goes the
ordinary way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.client import EMPTY_RESPONSE, Pipeline
from redis.exceptions import ExecAbortError, ResponseError, WatchError

TRIES = 2  # a connection found closed (a restarted server) is opened again once

Command = tuple[tuple[Any, ...], dict[str, Any]]


class Commit(Pipeline):
    """A transaction (MULTI/EXEC) whose replies are read straight off the connection."""

    def __enter__(self) -> Commit:
        return self

    def watch_and_read(
        self, names: Sequence[str], commands: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        """WATCH `names`, then send `commands`, in one round trip on this transaction's
        connection: their replies as the server sent them (no response callbacks; an error
        reply as its ResponseError), in order. The transaction then runs as after
        `watch`. A connection lost on the way is opened again and everything sent again
        (its WATCH went with it); lost twice, the error is raised."""
        wire = [("WATCH", *names), *commands]
        for attempt in range(1, TRIES + 1):
            connection: Any = self.connection
            if connection is None:
                connection = self.connection = self.connection_pool.get_connection()
            try:
                connection.send_packed_command(connection.pack_commands(wire))
                connection.read_response()  # WATCH's OK
                self.watching = True
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(connection.read_response())
                    except ResponseError as exc:
                        replies.append(exc)
                return replies
            except (redis.ConnectionError, redis.TimeoutError):
                connection.disconnect()  # its WATCH is gone with it
                self.watching = False
                if attempt == TRIES:
                    self.reset()
                    raise
        raise AssertionError("unreachable")

    def _execute_transaction(
        self, connection: Any, commands: list[Command], raise_on_error: bool
    ) -> list[Any]:
        if any(EMPTY_RESPONSE in options for _, options in commands):
            return super()._execute_transaction(connection, commands, raise_on_error)
        read = connection.read_response
        wire = [("MULTI",), *(args for args, _ in commands), ("EXEC",)]
        connection.send_packed_command(connection.pack_commands(wire))
        errors: list[tuple[int, ResponseError]] = []
        try:
            read()  # MULTI's OK
        except ResponseError as exc:
            errors.append((0, exc))
        for index, (args, _) in enumerate(commands):
            try:
                read()  # QUEUED, or the error that refused the command
            except ResponseError as exc:
                self.annotate_exception(exc, index + 1, args)  # type: ignore[no-untyped-call]
                errors.append((index, exc))
        try:
            replies = read()
        except ExecAbortError:
            if errors:
                raise errors[0][1] from None
            raise
        self.watching = False  # EXEC ends every WATCH
        if replies is None:
            raise WatchError("Watched variable changed.")
        for index, error in errors:
            replies.insert(index, error)
        if len(replies) != len(commands):
            connection.disconnect()
            raise ResponseError("Wrong number of response items from pipeline execution")
        if raise_on_error:
            self.raise_first_error(commands, replies)  # type: ignore[no-untyped-call]
        return list(replies)


def commit(client: redis.Redis) -> Commit:
    """A `Commit` on `client`'s connections (as `client.pipeline(transaction=True)`)."""
    return Commit(client.connection_pool, client.response_callbacks, True, None)

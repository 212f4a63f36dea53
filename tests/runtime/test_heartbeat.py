"""Heartbeats (orchestrator.runtime.heartbeat) on a real server: a running job's keys are
refreshed by one beating thread a process, and none is written again once its work ends."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from orchestrator.runtime.heartbeat import (
    HEARTBEAT_EVERY,
    HEARTBEAT_TTL,
    Heartbeat,
    first_beat_sent,
    queue_beat,
)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def _beating_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "heartbeat")


def test_running_work_is_refreshed_by_one_thread_for_every_heartbeat_of_the_process(
    client: redis.Redis,
) -> None:
    # Given three jobs running at once in this process
    with Heartbeat(client, ["alive:a"]), Heartbeat(client, ["alive:b", "alive:c"]):
        with Heartbeat(client, ["alive:d"]):
            # Then each key is set as its work starts, and one thread beats for them all
            assert all(0 < client.pttl(f"alive:{k}") <= HEARTBEAT_TTL * 1000 for k in "abcd")
            assert _beating_threads() == 1
            # and keeps them: two periods on, each was set again within the last one
            time.sleep(2 * HEARTBEAT_EVERY + 0.2)
            left = [client.pttl(f"alive:{k}") for k in "abcd"]
            assert min(left) > (HEARTBEAT_TTL - HEARTBEAT_EVERY) * 1000 - 100
        assert client.exists("alive:d") == 0  # its work ended: gone with it
        assert client.exists("alive:a") == 1
    assert _beating_threads() == 1  # the thread stays for the process's next jobs


def test_a_key_done_or_of_ended_work_is_never_set_again(client: redis.Redis) -> None:
    # Given a job whose first item is done, then the job ends
    with Heartbeat(client, ["alive:first", "alive:second"]) as heartbeat:
        pipe = client.pipeline()
        heartbeat.done("alive:first", pipe)
        pipe.execute()
    assert client.exists("alive:first", "alive:second") == 0
    # When the beating thread's next beats come
    time.sleep(HEARTBEAT_EVERY + 0.3)
    # Then neither key came back
    assert client.exists("alive:first", "alive:second") == 0


def test_a_try_reported_lost_before_its_start_is_gone_and_not_beaten(client: redis.Redis) -> None:
    # Given a try whose outstanding record the watchdog already removed
    client.hset("outstanding", "kept", "{}")
    outstanding = {"alive:kept": ("outstanding", "kept"), "alive:lost": ("outstanding", "lost")}
    with Heartbeat(client, outstanding.keys(), outstanding) as heartbeat:
        # Then its first beat finds it gone: named, and its key not kept
        assert heartbeat.gone == {"alive:lost"}
        assert client.exists("alive:lost") == 0
        assert client.exists("alive:kept") == 1


def test_a_forked_child_beats_with_a_thread_of_its_own(client: redis.Redis) -> None:
    with Heartbeat(client, ["alive:parent"]):
        assert _beating_threads() == 1
        child = os.fork()
        if child == 0:  # the child: the parent's thread did not come along
            code = 1
            try:
                fresh = redis.Redis(connection_pool=redis.ConnectionPool(**_kwargs(client)))
                before = _beating_threads()
                with Heartbeat(fresh, ["alive:child"]):
                    time.sleep(HEARTBEAT_EVERY + 0.3)
                    beaten = fresh.pttl("alive:child") > (HEARTBEAT_TTL - HEARTBEAT_EVERY) * 1000
                    code = 0 if before == 0 and _beating_threads() == 1 and beaten else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def _kwargs(client: redis.Redis) -> dict[str, object]:
    """A new pool's arguments: a forked child opens connections of its own."""
    return dict(client.connection_pool.connection_kwargs)


def test_a_first_beat_sent_with_the_jobs_start_is_used_once_and_not_sent_again(
    client: redis.Redis,
) -> None:
    # Given a job's first beat sent with its start (the worker's transaction): one try
    # still registered, one the watchdog already reported lost
    client.hset("outstanding", "kept", "{}")
    outstanding = {"alive:kept": ("outstanding", "kept"), "alive:lost": ("outstanding", "lost")}
    pipe = client.pipeline()
    queue_beat(pipe, outstanding, outstanding.values())
    first_beat_sent(outstanding, pipe.execute()[len(outstanding) :])
    assert client.exists("alive:kept", "alive:lost") == 2

    def reads() -> int:
        return int(client.info("stats")["total_reads_processed"])

    # When the job's Heartbeat starts
    before = reads()
    with Heartbeat(client, outstanding.keys(), outstanding) as heartbeat:
        # Then it sent no beat of its own (only the DELETE of the lost try's key) and knows
        # which try is gone, as its own beat would
        assert reads() - before - 1 == 1
        assert heartbeat.gone == {"alive:lost"}
        assert client.exists("alive:lost") == 0
    # and a later job with the same keys beats on its own: the first beat is used once
    before = reads()
    with Heartbeat(client, outstanding.keys(), outstanding) as again:
        assert reads() - before - 1 == 2  # its beat, and the DELETE
        assert again.gone == {"alive:lost"}


def test_a_first_beat_of_other_keys_is_not_taken_for_this_jobs(client: redis.Redis) -> None:
    # Given a first beat sent for another job's key
    client.hset("outstanding", "other", "{}")
    other = {"alive:other": ("outstanding", "other")}
    pipe = client.pipeline()
    queue_beat(pipe, other, other.values())
    first_beat_sent(other, pipe.execute()[1:])
    # When a job with its own key starts (its try no longer registered)
    mine = {"alive:mine": ("outstanding", "mine")}
    with Heartbeat(client, mine.keys(), mine) as heartbeat:
        # Then it looked for itself: its try is gone
        assert heartbeat.gone == {"alive:mine"}

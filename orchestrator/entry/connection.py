"""Connecting to Redis: the configured URL, or the embedded server.

A deployment's partition count is fixed when it is first used: it is stored
in Redis, and a process configured with another count is refused rather
than allowed to address events to the wrong partitions.
"""

from __future__ import annotations

import re
from typing import Any

import redis

from notifiers.redact import redact
from orchestrator.core.errors import ConfigurationError, RedisUnavailable
from orchestrator.entry.settings import Settings
from orchestrator.store import embedded
from orchestrator.store.keys import Keys

MIN_REDIS = (6, 2)
DEFAULT_PARTITIONS = 8


def connect(settings: Settings) -> redis.Redis:
    url = settings.redis_url or embedded.ensure_running(settings.data_dir)
    # the embedded server's every connection checks whose socket and server it reaches
    checked = {} if settings.redis_url else {"connection_class": embedded.OwnedSocketConnection}
    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=5,
            # No read timeout, as redis-py had until 8 (whose default is 5 s): RQ's workers
            # block on their queues for up to ~7 minutes on connections this pool already
            # holds, and with 5 s each wait ended in a "Timeout reading" and a backoff
            # sleep of up to a minute, during which the worker took no job. A dead server
            # is still found: health checks on idle connections, and RQ's own heartbeat.
            socket_timeout=None,
            health_check_interval=30,
            **checked,
        )
        tune(client)
        info = client.info("server")
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisUnavailable(
            f"cannot reach Redis at {redact(url)}: {_scrub(_reason(exc), url)}"
        ) from None
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(
            f"Redis at {redact(url)} refused the credentials: {_scrub(str(exc), url)}"
        ) from None
    except ValueError as exc:
        raise ConfigurationError(
            f"invalid Redis URL {redact(url)}: {_scrub(str(exc), url)}"
        ) from None
    version = tuple(int(part) for part in str(info.get("redis_version", "0.0")).split(".")[:2])
    if version < MIN_REDIS:
        raise ConfigurationError(
            f"Redis at {redact(url)} is {info.get('redis_version')}; 6.2 or newer is needed"
        )
    return client


def keys_for(client: redis.Redis, settings: Settings) -> Keys:
    """The key schema, with the partition count this deployment was created with."""
    meta = Keys(settings.namespace).meta
    recorded = client.hget(meta, "partitions")  # read first: a full Redis still answers reads
    if recorded is None:
        try:
            client.hsetnx(meta, "partitions", settings.partitions or DEFAULT_PARTITIONS)
            recorded = client.hget(meta, "partitions")
        except redis.exceptions.OutOfMemoryError:
            # a new deployment on a full Redis: nothing in it to read, and every write
            # fails on its own with a clear error; record the count on a later start
            recorded = None
    stored = int(recorded or settings.partitions or DEFAULT_PARTITIONS)
    if settings.partitions is not None and stored != settings.partitions:
        raise ConfigurationError(
            f"this deployment (namespace {settings.namespace!r}) was created with {stored} "
            f"partitions, but {settings.partitions} are configured; set "
            f"ORCHESTRATOR_PARTITIONS={stored} or use another namespace"
        )
    return Keys(settings.namespace, stored)


def tune(client: redis.Redis) -> redis.Redis:
    """The engine's settings of a client's connections, made before any connects (every
    client the engine makes, and the benchmark's own, which must measure the same)."""
    _describe_driver_once(client)
    _pack_with_hiredis(client)
    return client


def _describe_driver_once(client: redis.Redis) -> None:
    """Resolve once what redis-py would resolve for every new connection.

    A client made by `from_url` gives its connections no DriverInfo, so each new one
    builds its own, reading redis-py's package metadata from disk for CLIENT SETINFO:
    1-2 ms a connection. A forked work-horse (`worker --isolation job`) cannot share its
    parent's sockets and opens two per job. This is the DriverInfo `redis.Redis(...)`
    would have passed.
    """
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # an older redis-py resolves its version once, at import
        return
    client.connection_pool.connection_kwargs.setdefault("driver_info", DriverInfo())


def _pack_with_hiredis(client: redis.Redis) -> None:
    """Commands packed by hiredis as they are, not argument by argument in Python first
    (orchestrator.entry.packer says why); a client that encodes otherwise than UTF-8
    keeps redis-py's packer."""
    from orchestrator.entry.packer import CommandPacker

    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("encoding", "utf-8").lower().replace("_", "-") not in ("utf-8", "utf8"):
        return
    kwargs.setdefault("command_packer", CommandPacker(kwargs.get("encoding_errors", "strict")))


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.split("\n")[0]


def _scrub(text: str, url: str) -> str:
    """`text` without any word the redacted URL hides: redis-py's own messages may quote
    a piece of a malformed URL (a password holding a `/` reads as a port: "Port could
    not be cast to integer value as 'pa'")."""
    shown = set(re.findall(r"\w+", redact(url)))
    hidden = {word for word in re.findall(r"\w+", url) if word not in shown}
    for word in sorted(hidden, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(word)}(?!\w)", "***", text)
    return text


def check_durability(client: redis.Redis, url: str) -> None:
    """Refuse a server that can lose acknowledged events: no append-only file, or a
    memory policy that evicts keys (leases and finished instances carry TTLs)."""
    info: dict[str, Any] = {**client.info("persistence"), **client.info("memory")}
    problems = []
    if str(info.get("aof_enabled", "0")) != "1":
        problems.append("append-only persistence is off (appendonly no): a crash loses events")
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        problems.append(f"maxmemory-policy is {policy}: Redis may evict the engine's keys")
    if problems:
        raise ConfigurationError(
            f"Redis at {redact(url)} is not safe for the engine: "
            + "; ".join(problems)
            + ". Fix the server (appendonly yes, maxmemory-policy noeviction), or accept the "
            "risk with --accept-risk (ORCHESTRATOR_ACCEPT_RISK=1)"
        )

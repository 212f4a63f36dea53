"""The workflows each live applier serves, so that workers which disagree cannot share
a namespace silently.

Appliers share the partitions of a namespace: an instance's events go to whichever
applier holds its partition. A worker started with another set of workflow modules (or
versions) would dead-letter the events of workflows it does not know and run tasks it
cannot import. So each applier announces what it serves (name -> versions) beside its
heartbeat (store.leases keeps the live ids), and a worker about to start compares its own
set with the live ones: any difference refuses the start, naming it, unless the operator
says the mix is meant (a rolling upgrade that drains the old workers first).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import redis

from orchestrator.core.errors import ConfigurationError
from orchestrator.runtime.registry import Registry
from orchestrator.store.keys import Keys

Served = dict[str, list[int]]  # workflow name -> versions loaded
ANNOUNCE_EVERY = 5.0  # seconds between an applier's announcements


def served(registry: Registry) -> Served:
    return {name: registry.versions(name) for name in registry.names()}


def announce(client: redis.Redis, keys: Keys, applier_id: str, what: Served) -> None:
    client.hset(keys.applier_workflows, applier_id, json.dumps(what, sort_keys=True))


def withdraw(client: redis.Redis, keys: Keys, applier_id: str) -> None:
    client.hdel(keys.applier_workflows, applier_id)


def live(
    client: redis.Redis, keys: Keys, ttl: float, now: float | None = None
) -> dict[str, Served]:
    """What each applier seen within `ttl` seconds announced; the stale announcements of
    appliers no longer seen are removed. An announcement that cannot be read counts as
    serving nothing (so it differs, and is named)."""
    now = time.time() if now is None else now
    seen: list[tuple[bytes, float]] = client.zrangebyscore(  # type: ignore[assignment]
        keys.appliers, now - ttl, "+inf", withscores=True
    )
    alive = {member.decode(errors="replace") for member, _ in seen}
    announced: dict[bytes, bytes] = client.hgetall(keys.applier_workflows)  # type: ignore[assignment]
    found: dict[str, Served] = {}
    stale = []
    for raw_id, raw in announced.items():
        applier = raw_id.decode(errors="replace")
        if applier not in alive:
            stale.append(raw_id)
            continue
        found[applier] = _read(raw)
    if stale:
        client.hdel(keys.applier_workflows, *stale)
    return found


def _read(raw: bytes) -> Served:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {
        str(name): sorted(v for v in versions if isinstance(v, int))
        for name, versions in value.items()
        if isinstance(versions, list)
    }


def differences(mine: Served, theirs: Mapping[str, Served]) -> list[str]:
    """One line per live applier whose set differs from this worker's, saying how."""
    lines = []
    for applier, other in sorted(theirs.items()):
        parts = []
        only_mine = _show({n: v for n, v in mine.items() if other.get(n) != v})
        only_theirs = _show({n: v for n, v in other.items() if mine.get(n) != v})
        if only_mine:
            parts.append(f"this worker has {only_mine}")
        if only_theirs:
            parts.append(f"it has {only_theirs}")
        if parts:
            lines.append(f"applier {applier}: {'; '.join(parts)}")
    return lines


def _show(what: Served) -> str:
    return ", ".join(
        f"{name} v{'/v'.join(map(str, versions))}" for name, versions in sorted(what.items())
    )


def check(
    client: redis.Redis, keys: Keys, registry: Registry, ttl: float, now: float | None = None
) -> None:
    """Refuse to start beside live appliers that serve other workflows or versions."""
    lines = differences(served(registry), live(client, keys, ttl, now))
    if lines:
        raise ConfigurationError(
            f"workers on namespace {keys.namespace!r} serve other workflows than this one "
            f"({' | '.join(lines)}): they would split the partitions and dead-letter each "
            "other's events. Start every worker with the same ORCHESTRATOR_WORKFLOWS, give "
            "this one its own ORCHESTRATOR_NAMESPACE, or stop the others first; "
            "--allow-mixed-workflows starts it anyway"
        )

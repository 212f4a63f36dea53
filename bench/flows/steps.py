"""The steps every system runs: two no-ops, then one that records its finish time.

The same functions back all four systems, so the work per workflow is the
same everywhere: nothing, nothing, then one `HSET bench:done <wf> <time.time()>`
on the private server named by BENCH_REDIS_URL. The driver reads that hash;
the start time it pairs with is its own, taken when it submitted the workflow.
"""

from __future__ import annotations

import os
import time

import redis

DONE = "bench:done"
URL_ENV = "BENCH_REDIS_URL"

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    """One connection per process, made on first use (a worker's, never the driver's)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ[URL_ENV])
    return _client


def noop(wf: str) -> None:
    """Steps 1 and 2."""


def finish(wf: str, client: redis.Redis | None = None) -> None:
    """Step 3: the workflow is done at this instant."""
    (client or _redis()).hset(DONE, wf, repr(time.time()))

"""Every scenario by name, and the ones `--quick` and `--ci` run (`python -m bench.chaos`).

Kept apart from scenarios.py so the scenarios in their own modules (lost.py,
outage.py, misbehave.py, duplicates.py, forge.py, backlog.py) can use its rows
without an import cycle.

  saga-backlog   thousands of orders of the bundled `order`'s shape (chaos_saga),
                 Redis frozen 20 s under the backlog: payment timeouts fire while
                 the charges wait in the queue; every charge that returns must be
                 refunded once in an order that compensated (the `unrefunded` check)
"""

from __future__ import annotations

from collections.abc import Callable

from bench.chaos.backlog import saga_backlog
from bench.chaos.duplicates import duplicates
from bench.chaos.forge import forge_poison
from bench.chaos.lost import child_kill
from bench.chaos.misbehave import providers
from bench.chaos.outage import redis_restart
from bench.chaos.scenarios import QUICK as BASE_QUICK
from bench.chaos.scenarios import SCENARIOS as BASE
from bench.chaos.scenarios import Outcome

SCENARIOS: dict[str, Callable[[str], Outcome]] = {
    **BASE,
    "child-kill": child_kill,
    "redis-restart": redis_restart,
    "providers": providers,
    "duplicates": duplicates,
    "forge-poison": forge_poison,
    "saga-backlog": saga_backlog,
}
QUICK = (
    *BASE_QUICK,
    "child-kill",
    "redis-restart",
    "providers",
    "duplicates",
    "forge-poison",
    "saga-backlog",
)
# CI: no timing judged; duplicates and forge-poison run in full and quick (their checks
# also run in pytest: tests/bench/test_chaos_copies.py, tests/runtime/test_guard_*.py,
# tests/runtime/test_poison.py), to keep .ci/run under fifteen minutes
CI = ("kill-workers", "self-kill", "saga-backlog")

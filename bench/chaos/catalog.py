"""Every scenario by name, and the ones `--quick` runs: `python -m bench.chaos` reads this.

Kept apart from scenarios.py so the scenarios in their own modules (lost.py,
outage.py, misbehave.py) can use its rows without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.chaos.lost import child_kill
from bench.chaos.misbehave import providers
from bench.chaos.outage import redis_restart
from bench.chaos.scenarios import QUICK as BASE_QUICK
from bench.chaos.scenarios import SCENARIOS as BASE
from bench.chaos.scenarios import Outcome

SCENARIOS: dict[str, Callable[[bool], Outcome]] = {
    **BASE,
    "child-kill": child_kill,
    "redis-restart": redis_restart,
    "providers": providers,
}
QUICK = (*BASE_QUICK, "child-kill", "redis-restart", "providers")

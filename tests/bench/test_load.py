"""The busy core of the rows under load: one process, pinned to its core, spinning while
the block runs and gone after it; the rows relabelled so that their own targets judge them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.flows.load import busy_core, measure_loaded, under_load
from bench.targets import UNDER_LOAD, lines


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_busy_core_spins_on_its_core_and_ends_with_the_block() -> None:
    with busy_core(0) as pid:
        deadline = time.monotonic() + 10
        while "Cpus_allowed_list:\t0\n" not in Path(f"/proc/{pid}/status").read_text():
            assert time.monotonic() < deadline, "the spinner never pinned itself"
            time.sleep(0.02)
        spent = cpu_seconds(pid)
        time.sleep(0.5)
        assert cpu_seconds(pid) - spent > 0.1  # it keeps its core busy
    assert (
        not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    )


def test_rows_under_load_are_judged_by_their_own_rules() -> None:
    rows = under_load(
        [
            {
                "workload": "3-step workflows/s, 2 workers, W=1000",
                "system": "orchestrator",
                "value": 900.0,
            },
            {
                "workload": "3-step workflows/s, 2 workers, W=1000",
                "system": "dramatiq",
                "value": 800.0,
            },
        ]
    )
    (line,) = lines(rows, "2")
    assert line.workload.startswith(f"2. {UNDER_LOAD} 3-step")
    assert (line.met, line.target) == (True, ">= fastest peer, >= 4x RQ")  # 1.5x applies when quiet


def test_a_quick_run_measures_nothing_under_load() -> None:
    found = measure_loaded(quick=True)
    assert found["rows"] == [] and "full runs only" in found["details"]["skipped"]

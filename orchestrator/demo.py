"""`orchestrator demo`: a short, self-contained run of the order workflow.

It starts a private embedded Redis in a temporary folder (or uses the Redis
URL given), starts `orchestrator worker` as a real subprocess, starts a
handful of orders chosen to take every path (shipped; card declined; out of
stock; undeliverable, which refunds and releases; a payment that times out),
waits for all of them to finish, and prints what happened to each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator import embedded
from orchestrator.bootstrap import bootstrap
from orchestrator.settings import Settings

ORDERS: list[tuple[str, dict[str, Any]]] = [
    ("ships", {"items": 2, "card": "ok"}),
    ("ships", {"items": 1, "card": "ok"}),
    ("ships", {"items": 5, "card": "ok"}),
    ("card declined", {"items": 1, "card": "declined"}),
    ("out of stock", {"items": 40, "card": "ok"}),
    ("undeliverable", {"items": 1, "card": "ok", "address": "nowhere"}),
    ("payment times out", {"items": 1, "card": "slow", "slow_seconds": 4}),
]


def run_demo(settings: Settings, timeout: float = 60.0) -> int:
    console = Console()
    scratch = Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))
    private = settings.redis_url is None
    url = embedded.ensure_running(scratch) if private else settings.redis_url
    assert url is not None
    demo_settings = replace(settings, redis_url=url, workflows=("workflows",), partitions=None)
    log_path = scratch / "worker.log"
    env = {**os.environ, "REDIS_URL": url, "ORCHESTRATOR_WORKFLOWS": "workflows"}
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--processes", "2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        console.print(
            f"[bold]Demo[/bold] on {'a private embedded Redis' if private else url}; "
            f"worker pid {worker.pid}"
        )
        client = bootstrap(demo_settings).client
        started = time.time()
        tag = f"{int(started) % 100000:05d}"
        runs = []
        for index, (label, data) in enumerate(ORDERS, 1):
            order = {
                "order_id": f"D{tag}-{index}",
                "email": f"customer{index}@example.com",
                "amount": 10.0 * index,
                "work_seconds": 0.1,
                **data,
            }
            runs.append((label, order["order_id"], client.start("order", order)))
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} finished"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("orders", total=len(runs))
            while True:
                done = sum(client.status(iid).finished for _, _, iid in runs)
                progress.update(bar, completed=done)
                if done == len(runs) or time.time() - started > timeout:
                    break
                time.sleep(0.1)
        table = Table(title="What happened to each order")
        for column in ("order", "scenario", "final state", "status", "steps", "undone", "time"):
            table.add_column(column)
        unfinished = 0
        for label, order_id, iid in runs:
            instance = client.status(iid)
            unfinished += not instance.finished
            effects = [e for h in client.history(iid) for e in h["effects"]]
            steps = sum(e.startswith("run task") for e in effects)
            undone = sum(e.startswith("run compensation") for e in effects)
            table.add_row(
                order_id,
                label,
                instance.state or "-",
                instance.status,
                str(steps),
                str(undone),
                f"{instance.updated_at - instance.created_at:.2f}s",
            )
        console.print(table)
        sent = [line for line in log_path.read_text().splitlines() if line.startswith("[")]
        console.print(f"Notifications sent to the console channel ({len(sent)}):")
        for line in sent:
            console.print(f"  {line}", markup=False, highlight=False)
        if unfinished:
            console.print(f"[red]{unfinished} order(s) did not finish in {timeout:.0f}s[/red]")
            return 1
        console.print(f"All {len(runs)} orders finished in {time.time() - started:.1f}s.")
        return 0
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
        if private:
            embedded.stop(scratch)
            shutil.rmtree(scratch, ignore_errors=True)

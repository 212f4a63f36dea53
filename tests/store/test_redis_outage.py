"""Redis killed with SIGKILL and restarted from its append-only file under load:
no acknowledged event is lost, and the workers carry on by themselves."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.entry.bootstrap import bootstrap
from orchestrator.entry.settings import Settings
from support.redis_server import RedisServer
from tests.conftest import ROOT, TEST_WORKFLOWS, cli_env


def test_workers_carry_on_after_redis_is_killed_and_restarted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, fsync="always")
    server.start()
    url = server.url
    env = cli_env(url, tmp_path, ORCHESTRATOR_LEASE_TTL="2")
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--processes", "1"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    app = bootstrap(
        Settings(redis_url=url, workflows=TEST_WORKFLOWS, partitions=4, data_dir=tmp_path)
    )
    try:
        counters = [app.client.start("counter", instance_id=f"k{i}") for i in range(5)]
        acknowledged: dict[str, list[str]] = {c: [] for c in counters}
        for round_ in range(3):
            # Given events acknowledged to the client...
            for n in range(10):
                for c in counters:
                    event_id = f"{c}-{round_}-{n}"
                    app.client.emit("tick", instance_id=c, event_id=event_id)
                    acknowledged[c].append(event_id)
            # ...when Redis dies with SIGKILL and comes back from its append-only file
            server.kill()
            server.start()  # from its append-only file, on the same port
        # Then the workers reconnect, and every acknowledged event is applied once, in order
        deadline = time.monotonic() + 40
        while True:
            applied = {
                c: [h["event"]["id"] for h in app.client.history(c) if h["event"]["type"] == "tick"]
                for c in counters
            }
            if applied == acknowledged:
                break
            assert time.monotonic() < deadline, {c: len(v) for c, v in applied.items()}
            time.sleep(0.2)
        assert worker.poll() is None, "the worker gave up"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        server.stop()

"""Everything one scenario runs on, started and stopped by the harness.

  redis-server   the engine's embedded binary, 127.0.0.1 on a free port, a temp
                 folder, append-only (`--appendfsync always`, or `everysec`)
  SMTP           support/smtp_server.py in a thread of this process, no TLS
  Prism          support/prism.py serving Twilio's description, for SMS
  workers        N `python -m cli.main worker` processes (a supervisor each, of
                 an applier, task workers that fork a work-horse per job and
                 notification workers), with ORCHESTRATOR_REQUIRE_CHANNELS=1,
                 ORCHESTRATOR_LEASE_TTL=2 and ORCHESTRATOR_PUBLISH_LIFECYCLE=1 (the
                 engine's own events published beside the workload's: outbox.py)

Nothing outside 127.0.0.1 is ever contacted: proxies are dropped from the
workers' environment and NO_PROXY names the loopback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chaos.journal import FaultLog
from bench.chaos.pool import WorkerPool
from bench.chaos.providers import TimedSmtpServer
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from support.ports import free_port
from support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = "bench.chaos.workload"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_FROM = "+15005550001"
PHONE = "+15005550006"
DROPPED = ("REDIS_", "ORCHESTRATOR_", "SMTP_", "TWILIO_", "VAPID_", "WEBHOOK_")
PROXIES = ("http_proxy", "https_proxy", "all_proxy")


@dataclass(frozen=True)
class Shape:
    """How many of what: N worker processes, each with `processes` task workers."""

    workers: int = 2
    processes: int = 2
    notifiers: int = 1
    fsync: str = "always"


@dataclass
class Cluster:
    folder: Path
    redis_url: str
    redis: RedisServer
    app: App
    smtp: TimedSmtpServer
    prism_log: Path
    pool: WorkerPool
    faults: FaultLog


def worker_env(
    redis_url: str, folder: Path, smtp: dict[str, str], prism_url: str
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(DROPPED) and k.lower() not in PROXIES
    }
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        REDIS_URL=redis_url,
        ORCHESTRATOR_HOME=str(folder / "home"),
        ORCHESTRATOR_WORKFLOWS=WORKFLOWS,
        ORCHESTRATOR_REQUIRE_CHANNELS="1",
        ORCHESTRATOR_LEASE_TTL="2",
        ORCHESTRATOR_PUBLISH_LIFECYCLE="1",
        NO_PROXY="127.0.0.1,localhost",
        TWILIO_ACCOUNT_SID=TWILIO_SID,
        TWILIO_AUTH_TOKEN="chaos-token-not-a-secret",
        TWILIO_FROM=TWILIO_FROM,
        TWILIO_API_BASE=prism_url,
        TWILIO_TIMEOUT="5",
        **smtp,
    )
    return env


def _twilio_spec(folder: Path) -> Path:
    from support.prism import patched_spec

    fixtures = ROOT / "tests" / "fixtures" / "twilio"
    return patched_spec(
        fixtures / "twilio_api_v2010.messages.json",
        fixtures / "errors.merge-patch.json",
        folder / "twilio.json",
    )


def _prism(folder: Path) -> contextlib.AbstractContextManager[Any]:
    from support.prism import PRISM, prism_mock

    if not PRISM.exists():
        raise RuntimeError("Prism is not installed: run `npm ci` at the repository root")
    return prism_mock(_twilio_spec(folder), free_port(), folder / "prism.log")


@contextlib.contextmanager
def cluster(
    folder: Path,
    shape: Shape,
    smtp: TimedSmtpServer | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """Redis, SMTP, Prism and the workers; all stopped when the block ends. `smtp` replaces
    the well-behaved SMTP server, `env` adds to (or overrides) the workers' environment."""
    with contextlib.ExitStack() as stack:
        server = RedisServer(folder, fsync=shape.fsync)
        server.start()
        stack.callback(server.stop)
        url = server.url
        smtp = smtp or TimedSmtpServer()
        smtp.start()
        stack.callback(smtp.stop)
        prism = stack.enter_context(_prism(folder))
        faults = FaultLog(folder / "faults.jsonl")
        stack.callback(faults.close)
        app = bootstrap(Settings(redis_url=url, workflows=(WORKFLOWS,), data_dir=folder))
        workers_env = {**worker_env(url, folder, smtp.env, prism.url), **(env or {})}
        pool = WorkerPool(
            [sys.executable, "-m", "cli.main", "worker", "--isolation", "job"],
            workers_env,
            folder,
            faults,
            app.redis,
            shape,
        )
        stack.callback(pool.stop)
        pool.start_all()
        yield Cluster(folder, url, server, app, smtp, prism.log, pool, faults)

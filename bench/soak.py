"""Soak: orders at a steady rate for minutes, then Redis memory back to its baseline.

    python -m bench.soak [--seconds 180] [--rate 150] [--retention 20] [--json [PATH]]

Everything is real and on this machine: a private redis-server (support/redis_server.py),
the engine's worker (`python -m cli.main worker --processes P --notifiers K`: a
supervisor, one applier, P task workers, K notification workers, in a session of
their own, stopped by process group), an SMTP server and a Twilio Messages API
stand-in in this process (bench/notify_providers.py, answering at once), and the
bundled `order` workflow: reserve, charge, ship, then an email and an SMS. Every
fifth order takes a failure path, in turn: out of stock (fails at the first step),
card declined (fails at the second and releases the stock), address nowhere (fails
at the third, refunds and releases); those end `failed` and say so by email and SMS.
The workers keep finished instances for `--retention` seconds (ORCHESTRATOR_RETENTION).

Readings of `INFO memory` used_memory and the key counts (the whole database, and
the engine's namespace): the baseline once the workers are up and before any
order; every second during the load and the drain (the peak is the largest);
and at the end: once every order has sent its email, its instance and everything
written for it has expired (retention), the janitor (run by the appliers once a
minute) has dropped it from the indexes and, one retention later, forgotten its
id, and SETTLE seconds more have passed.

It passes when, at the end, no key of the namespace is left but the deployment-wide
ones (`deployment_wide`), every order has ended and sent its email, and used_memory
is back within MARGIN_BYTES or MARGIN_SHARE of the baseline, whichever is larger.
Why that margin: at 150 orders/s for 3 minutes, a leak of 40 bytes an order
(27,000 orders) already exceeds 1 MiB, while what moves used_memory without being
stored data stays well under it: the clients' query and output buffers (a dozen
connections), the Lua script cache, the main dictionary's tables until Redis
shrinks them. "Sustained" is said of the rate when the orders started at the rate
asked, and finished at 95 % of it during the load with at most 5 seconds' worth
still unfinished when the load stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.notify_procs import Workers
from bench.notify_providers import Providers, SlowSmtp
from orchestrator.entry.bootstrap import bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.runtime.watchdog import HEARTBEAT_TTL
from orchestrator.store.keys import Keys
from support.redis_server import private_redis
from support.twilio_server import TwilioServer

SECONDS = 180.0
RATE = 150.0
RETENTION = 20.0
FAILURES = 0.2  # share of orders on a failure path
PROCESSES = 2  # task worker processes
NOTIFIERS = 1  # notification worker processes
JANITOR_EVERY = 60.0  # the appliers run Retention.clean about this often
SETTLE = 15.0  # s after the last key of an order is gone, before the last reading
MARGIN_BYTES = 1 << 20
MARGIN_SHARE = 0.10
DRAIN_LIMIT = 300.0  # s after the load for every order to end
SAMPLE_EVERY = 1.0
FAILURE_PATHS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("out of stock", {"items": 20, "stock": 10}),
    ("card declined", {"card": "declined"}),
    ("address nowhere", {"address": "nowhere"}),
)


def deployment_wide(keys: Keys) -> set[str]:
    """The namespace keys a running deployment keeps whatever it has run (none grows with
    the instances it has run): its settings, each partition's inbox and lease, the live
    appliers, the channels' rate slots."""
    partitions = range(keys.partitions)
    return {
        keys.meta,
        keys.appliers,
        *(keys.inbox(p) for p in partitions),
        *(keys.lease(p) for p in partitions),
        keys.rate("email"),
        keys.rate("sms"),
    }


class CountingSmtp(SlowSmtp):
    """Plain SMTP answering at once; counts each recipient's messages, and the failed ones
    (the order_failed template's subject)."""

    def __init__(self) -> None:
        super().__init__(delay=0.0)
        self.received: Counter[str] = Counter()
        self.failed: set[str] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0)
        failed = b"Subject: We could not complete" in bytes(envelope.content)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received[str(rcpt)] += 1
                if failed:
                    self.failed.add(str(rcpt))
        return "250 2.0.0 Message accepted"


@dataclass
class Reading:
    at: float
    used_memory: int
    keys: int  # DBSIZE
    namespace_keys: int  # -1: not counted (a SCAN of the whole namespace, not every second)
    unfinished: int  # instances pending, running or compensating


@dataclass
class Run:
    rate: float
    seconds: float
    retention: float
    baseline: Reading | None = None
    end: Reading | None = None
    samples: list[Reading] = field(default_factory=list)
    started: int = 0
    start_seconds: float = 0.0
    most_behind: float = 0.0  # s the driver was late for a start, at most
    load_end: Reading | None = None
    finished_in_load: int = 0
    drain_seconds: float | None = None
    cleared_seconds: float | None = None  # from the last email to the last order key gone
    left: dict[str, int] = field(default_factory=dict)  # namespace keys left -> ttl (ms)
    rq_keys: tuple[int, int] = (0, 0)  # at baseline, at the end
    emails: int = 0
    duplicates: int = 0
    missing: int = 0
    sms: int = 0
    failed_expected: int = 0
    failed_seen: int = 0
    mismatched: int = 0
    load_average: dict[str, list[float]] = field(default_factory=dict)
    dead: list[str] = field(default_factory=list)


def order(n: int) -> tuple[dict[str, Any], bool]:
    """Order n's input, and whether it takes a failure path (one in five: 3 of every 15)."""
    data: dict[str, Any] = {
        "order_id": f"S{n}",
        "email": email_of(n),
        "phone": f"+1202{2 + n // 1_000_000 % 8}{n % 1_000_000:06d}",  # valid E.164
        "work_seconds": 0,
    }
    slot = n % 15
    if slot < round(15 * FAILURES):
        data.update(FAILURE_PATHS[slot % len(FAILURE_PATHS)][1])
        return data, True
    return data, False


def email_of(n: int) -> str:
    return f"s{n:07d}@soak.example"


class Probe:
    """Readings of the server, on a connection of their own."""

    def __init__(self, url: str, keys: Keys) -> None:
        self.redis = redis.Redis.from_url(url)
        self.keys = keys

    def read(self, count: bool = False) -> Reading:
        pipe = self.redis.pipeline(transaction=False)
        pipe.info("memory")
        pipe.dbsize()
        for status in ("pending", "running", "compensating"):
            pipe.scard(self.keys.by_status(status))
        memory, size, *unfinished = pipe.execute()
        return Reading(
            time.time(),
            int(memory["used_memory"]),
            int(size),
            self.namespace_count() if count else -1,
            sum(int(n) for n in unfinished),
        )

    def namespace_count(self) -> int:
        return sum(1 for _ in self.redis.scan_iter(match=f"{self.keys.namespace}:*", count=5000))

    def left(self) -> dict[str, int]:
        """Namespace keys beyond the deployment-wide ones, with their ttl in ms; the
        heartbeats of the last tasks are left out while they expire (HEARTBEAT_TTL)."""
        wide = deployment_wide(self.keys)
        found: dict[str, int] = {}
        for raw in self.redis.scan_iter(match=f"{self.keys.namespace}:*", count=5000):
            key = raw.decode()
            if key in wide:
                continue
            ttl = int(self.redis.pttl(key))
            if ":alive:" in key and 0 < ttl <= HEARTBEAT_TTL * 1000:
                continue
            if ttl != -2:
                found[key] = ttl
        return found

    def rq_count(self) -> int:
        return sum(1 for _ in self.redis.scan_iter(match="rq:*", count=5000))


def worker_env(url: str, folder: Path, extra: dict[str, str]) -> dict[str, str]:
    dropped = ("REDIS_", "ORCHESTRATOR_", "SMTP_", "TWILIO_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(dropped) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    root = str(Path(__file__).resolve().parents[1])
    env.update(PYTHONPATH=root, REDIS_URL=url, NO_PROXY="127.0.0.1,localhost", **extra)
    env["ORCHESTRATOR_HOME"] = str(folder / "home")
    return env


def soak(
    seconds: float = SECONDS,
    rate: float = RATE,
    retention: float = RETENTION,
    processes: int = PROCESSES,
    notifiers: int = NOTIFIERS,
    progress: bool = True,
) -> Run:
    run = Run(rate=rate, seconds=seconds, retention=retention)
    run.load_average["before"] = [round(x, 2) for x in os.getloadavg()]
    folder = Path(tempfile.mkdtemp(prefix="orchestrator-soak-"))

    def say(text: str) -> None:
        if progress:
            print(f"[soak {time.monotonic() - began:6.1f} s] {text}", file=sys.stderr, flush=True)

    began = time.monotonic()
    try:
        with private_redis() as server, CountingSmtp() as smtp, TwilioServer(0.0) as sms:
            found = Providers(smtp, sms)
            settings = Settings(
                redis_url=server.url, workflows=("workflows",), retention=retention, data_dir=folder
            )
            app = bootstrap(settings)
            probe = Probe(server.url, app.keys)
            workers = Workers(folder)
            env = worker_env(
                server.url,
                folder,
                {
                    **found.env,
                    "ORCHESTRATOR_WORKFLOWS": "workflows",
                    "ORCHESTRATOR_RETENTION": f"{retention:g}",
                    "ORCHESTRATOR_ACCEPT_RISK": "1",  # the private server keeps no AOF
                    "ORCHESTRATOR_REQUIRE_CHANNELS": "1",  # never the console instead
                    "ORCHESTRATOR_RATE_SMS": "0",  # a Twilio number's 10/s is not the engine's
                },
            )
            argv = [sys.executable, "-m", "cli.main", "worker", "--processes", str(processes)]
            workers.start("worker", [*argv, "--notifiers", str(notifiers)], env)
            try:
                _ready(probe, app.keys, workers)
                time.sleep(2.0)  # the workers' first writes (registrations, leases) are done
                run.baseline = probe.read(count=True)
                run.rq_keys = (probe.rq_count(), 0)
                say(f"baseline: {_mb(run.baseline.used_memory)}, {run.baseline.keys} keys")
                _load(run, app, probe, smtp, workers, say)
                _drain(run, probe, smtp, workers, say)
                _clear(run, probe, workers, say)
                run.rq_keys = (run.rq_keys[0], probe.rq_count())
            finally:
                run.dead = workers.dead()
                workers.stop()
                probe.redis.close()
                app.redis.close()
            with smtp.lock:
                received = Counter(smtp.received)
                failed = set(smtp.failed)
            expected = {email_of(n): order(n)[1] for n in range(run.started)}
            run.emails = sum(received.values())
            run.duplicates = sum(c - 1 for c in received.values() if c > 1)
            run.missing = sum(1 for address in expected if address not in received)
            run.failed_expected = sum(expected.values())
            run.failed_seen = sum(1 for address in failed if address in expected)
            run.mismatched = sum(
                1 for address, fails in expected.items() if (address in failed) != fails
            )
            with sms.lock:
                run.sms = len(sms.messages)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    run.load_average["after"] = [round(x, 2) for x in os.getloadavg()]
    return run


def _ready(probe: Probe, keys: Keys, workers: Workers) -> None:
    """The applier holds every partition and the workers are registered with RQ."""
    deadline = time.monotonic() + 60
    while True:
        pipe = probe.redis.pipeline(transaction=False)
        for p in range(keys.partitions):
            pipe.exists(keys.lease(p))
        pipe.scard("rq:workers")
        *leased, registered = pipe.execute()
        if all(leased) and registered >= 2:
            return
        if time.monotonic() > deadline or workers.dead():
            raise RuntimeError(f"the workers did not start: {'; '.join(workers.dead())}")
        time.sleep(0.1)


def _load(run: Run, app: Any, probe: Probe, smtp: CountingSmtp, workers: Workers, say: Any) -> None:
    """Start orders open loop at the rate (the n-th at n/rate s), sampling every second."""
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_EVERY):
            run.samples.append(probe.read())

    sampler = threading.Thread(target=sample, name="soak-sampler", daemon=True)
    sampler.start()
    total = int(run.seconds * run.rate)
    t0 = time.monotonic()
    next_note = t0 + 15
    try:
        for n in range(total):
            due = t0 + n / run.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                run.most_behind = max(run.most_behind, now - due)
            data, _ = order(n)
            app.client.start("order", data)
            run.started = n + 1
            if time.monotonic() >= next_note:
                next_note += 15
                last = run.samples[-1] if run.samples else None
                with smtp.lock:
                    ended = len(smtp.received)
                say(
                    f"{run.started} started, {ended} ended"
                    + (f", {_mb(last.used_memory)}, {last.keys} keys" if last else "")
                )
                if workers.dead():
                    raise RuntimeError(f"a worker died: {'; '.join(workers.dead())}")
        run.start_seconds = time.monotonic() - t0
        with smtp.lock:
            run.finished_in_load = len(smtp.received)
        run.load_end = probe.read(count=True)
    finally:
        stop.set()
        sampler.join()
    run.samples.append(run.load_end or probe.read())


def _drain(run: Run, probe: Probe, smtp: CountingSmtp, workers: Workers, say: Any) -> None:
    """Wait for every order's email (each order sends one, when it ends)."""
    began = time.monotonic()
    while True:
        with smtp.lock:
            ended = len(smtp.received)
        if ended >= run.started:
            run.drain_seconds = time.monotonic() - began
            say(f"every order ended, {run.drain_seconds:.1f} s after the load")
            return
        if time.monotonic() - began > DRAIN_LIMIT or workers.dead():
            say(f"gave up draining: {ended} of {run.started} ended")
            return
        time.sleep(SAMPLE_EVERY)
        run.samples.append(probe.read())


def _clear(run: Run, probe: Probe, workers: Workers, say: Any) -> None:
    """Wait for every key of every order to be gone (retention, the janitor, the expired
    ids' retention), then SETTLE seconds, then the last reading."""
    began = time.monotonic()
    limit = 2 * run.retention + 2 * JANITOR_EVERY + 60
    while True:
        left = probe.left()
        if not left:
            run.cleared_seconds = time.monotonic() - began
            say(f"no order key left, {run.cleared_seconds:.0f} s after the last ended; settling")
            break
        if time.monotonic() - began > limit or workers.dead():
            say(f"gave up waiting: {len(left)} namespace keys left")
            break
        time.sleep(2.0)
    time.sleep(SETTLE)
    run.left = probe.left()
    run.end = probe.read(count=True)


# -- the verdict and the table ------------------------------------------------------------


def margin(baseline: int) -> int:
    return max(MARGIN_BYTES, int(baseline * MARGIN_SHARE))


def peak(run: Run) -> Reading | None:
    return max(run.samples, key=lambda r: r.used_memory, default=None)


def verdict(run: Run) -> dict[str, Any]:
    assert run.baseline is not None
    end = run.end
    allowed = margin(run.baseline.used_memory)
    memory_back = end is not None and end.used_memory - run.baseline.used_memory <= allowed
    started_rate = run.started / run.start_seconds if run.start_seconds else 0.0
    finished_rate = run.finished_in_load / run.seconds if run.seconds else 0.0
    unfinished = run.started - run.finished_in_load
    sustained = (
        started_rate >= 0.98 * run.rate
        and finished_rate >= 0.95 * run.rate
        and unfinished <= 5 * run.rate
    )
    checks = {
        "memory back to baseline": memory_back,
        "no order key left": end is not None and not run.left,
        "every order ended, its email sent": run.missing == 0 and run.started > 0,
        "no worker died": not run.dead,
    }
    return {
        "passed": all(checks.values()),
        "checks": checks,
        "margin_bytes": allowed,
        "rate_started": round(started_rate, 1),
        "rate_finished_during_load": round(finished_rate, 1),
        "unfinished_at_load_end": unfinished,
        "sustained": sustained,
    }


def report(run: Run) -> dict[str, Any]:
    top = peak(run)
    readings = {
        "baseline": run.baseline,
        "load end": run.load_end,
        "peak": top,
        "after retention": run.end,
    }
    return {
        "command": (
            f"python -m bench.soak --seconds {run.seconds:g} --rate {run.rate:g} "
            f"--retention {run.retention:g}"
        ),
        "orders": run.started,
        "rate_asked": run.rate,
        "failure_share": FAILURES,
        "retention_seconds": run.retention,
        "readings": {
            name: None
            if r is None
            else {"used_memory": r.used_memory, "keys": r.keys, "namespace_keys": r.namespace_keys}
            for name, r in readings.items()
        },
        "start_seconds": round(run.start_seconds, 1),
        "most_behind_seconds": round(run.most_behind, 3),
        "drain_seconds": None if run.drain_seconds is None else round(run.drain_seconds, 1),
        "cleared_seconds": None if run.cleared_seconds is None else round(run.cleared_seconds, 1),
        "emails": run.emails,
        "email_duplicates": run.duplicates,
        "missing": run.missing,
        "sms": run.sms,
        "failed_expected": run.failed_expected,
        "failed_seen": run.failed_seen,
        "outcome_mismatches": run.mismatched,
        "rq_keys": {"baseline": run.rq_keys[0], "end": run.rq_keys[1]},
        "left": run.left,
        "load_average": run.load_average,
        "nproc": len(os.sched_getaffinity(0)),
        "dead_workers": run.dead,
        **verdict(run),
    }


def table(result: dict[str, Any]) -> str:
    res = result
    lines = [
        f"{res['command']}: {res['orders']:,} orders, {res['failure_share']:.0%} on failure "
        f"paths, retention {res['retention_seconds']:g} s",
        f"{'reading':<16} {'used_memory':>12} {'keys':>10} {'engine keys':>12}",
    ]
    for name, r in res["readings"].items():
        if r is None:
            lines.append(f"{name:<16} {'-':>12}")
            continue
        counted = f"{r['namespace_keys']:,}" if r["namespace_keys"] >= 0 else "-"
        lines.append(f"{name:<16} {_mb(r['used_memory']):>12} {r['keys']:>10,} {counted:>12}")
    base, end = res["readings"]["baseline"], res["readings"]["after retention"]
    if base and end:
        delta, allowed = (end["used_memory"] - base["used_memory"]) / 1024, res["margin_bytes"]
        lines.append(
            f"after retention - baseline: {delta:+,.0f} KB (margin {allowed / 1024:,.0f} KB)"
        )
    lines += [
        f"rate: asked {res['rate_asked']:g}/s, started {res['rate_started']}/s (at most "
        f"{res['most_behind_seconds']} s late), ended {res['rate_finished_during_load']}/s "
        f"during the load, {res['unfinished_at_load_end']:,} unfinished when it stopped, "
        f"drained in {res['drain_seconds']} s; sustained: {'yes' if res['sustained'] else 'no'}",
        f"orders: {res['orders'] - res['missing']:,}/{res['orders']:,} ended; emails "
        f"{res['emails']:,} ({res['email_duplicates']} duplicates), SMS {res['sms']:,}; failed "
        f"{res['failed_seen']:,} (expected {res['failed_expected']:,}, "
        f"{res['outcome_mismatches']} not as expected)",
        f"every order key gone {res['cleared_seconds']} s after the last order ended; RQ keys "
        f"{res['rq_keys']['baseline']} at baseline, {res['rq_keys']['end']} at the end",
        f"load average before {res['load_average'].get('before')}, after "
        f"{res['load_average'].get('after')} ({res['nproc']} CPUs)",
    ]
    if res["left"]:
        shown = ", ".join(f"{k} (ttl {v} ms)" for k, v in list(res["left"].items())[:10])
        lines.append(f"left: {len(res['left'])} keys: {shown}")
    for name, ok in res["checks"].items():
        lines.append(f"  {'ok ' if ok else 'NO '} {name}")
    lines.append("PASSED" if res["passed"] else "FAILED")
    return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / (1 << 20):,.2f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=SECONDS, help="load duration (180)")
    parser.add_argument("--rate", type=float, default=RATE, help="orders started a second (150)")
    parser.add_argument(
        "--retention", type=float, default=RETENTION, help="the workers' retention, s (20)"
    )
    parser.add_argument("--processes", type=int, default=PROCESSES, help="task workers (2)")
    parser.add_argument("--notifiers", type=int, default=NOTIFIERS, help="notifiers (1)")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="the figures as JSON: on stdout instead of the table, or to PATH as well",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0 or args.retention < 1:
        parser.error("--seconds and --rate must be positive, --retention at least 1")
    run = soak(args.seconds, args.rate, args.retention, args.processes, args.notifiers)
    result = report(run)
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(table(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

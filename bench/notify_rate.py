"""Notifications per second against providers that answer in 100 ms (issue #6, workload 4).

    python -m bench.notify_rate [--quick] [--json PATH] [--notifiers K]

Everything runs on this machine: a private redis-server (support/redis_server.py),
an SMTP server that answers each message 100 ms after its DATA and a
multi-threaded HTTP server speaking Twilio's Messages API that answers each SMS
after 100 ms (bench/notify_providers.py), counting what they accept and when.

orchestrator: `python -m cli.main worker --processes 1 --notifiers K` (an
applier, an idle task worker, K notification workers), workflows from
bench.notify_flow (start, send one notification, finish on its answer),
instances started one by one with Orchestrator.start. The SMS rate limit is
lifted (ORCHESTRATOR_RATE_SMS=0: its default of 10/s is a Twilio number's
pace, not the engine's). A warm-up run first (workers up, connections open),
then N notifications timed from the first start to the last message the
server accepted. Then every instance must have finished, and each address
must have arrived exactly once. The CPU time each process spent on the run
is reported per notification: on a shared machine that is steadier than
the rate.

rq: K `rq worker -w bench.rq_workers.QuietSimpleWorker` processes (no fork per job: the
strongest plain-RQ setup for I/O), one job per message: smtplib opens a
connection, sends, quits; the SMS is one `requests.post` on a new connection.
Timed from the first enqueue to the last message accepted.

Figures only: nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import redis

from bench.notify_procs import Workers, cpu_seconds
from bench.notify_providers import Providers, providers
from cli.run import DEFAULT_NOTIFIERS
from support.procs import children
from support.redis_server import private_redis

FULL = {"notifications": 2000, "warmup": 200, "rq": 200}
QUICK = {"notifications": 200, "warmup": 40, "rq": 40}
DELAY = 0.1  # seconds a provider takes to answer
# notification worker processes (and RQ workers): the worker command's default, as issue
# #18 asks (`--notifiers K` measures another count)
NOTIFIERS = DEFAULT_NOTIFIERS
WORKFLOWS = "bench.notify_flow"
RQ_QUEUE = "bench-notify"
QUIET_WORKER = "bench.rq_workers.QuietSimpleWorker"  # SimpleWorker without the pub/sub thread
WAIT_LIMIT = 180.0  # seconds a run may take before it is declared stuck
CHANNELS = ("email", "sms")
WORKLOADS = {
    "email": "notifications/s, email, SMTP answers after 100 ms",
    "sms": "notifications/s, SMS, HTTP answers after 100 ms",
}
RUNS = ("orchestrator-warmup", "orchestrator", "rq-warmup", "rq")


def prefix(channel: str, run: str) -> str:
    """What the addresses of one run start with, and no other run's."""
    index = RUNS.index(run)
    # +1 202 then an exchange from 2 (the first digit of a valid US exchange): numbers
    # that phonenumbers accepts as E.164, as every send checks (notifiers.addresses)
    return f"b{index}-" if channel == "email" else f"+1202{index + 2}"


def address(channel: str, run: str, n: int) -> str:
    start = prefix(channel, run)
    return f"{start}{n:06d}@bench.example" if channel == "email" else f"{start}{n:06d}"


def wait_for(done: Callable[[], bool], what: str, workers: Workers) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while not done():
        if time.monotonic() > deadline or workers.dead():
            raise RuntimeError(f"stuck waiting for {what}; {'; '.join(workers.dead())}")
        time.sleep(0.01)


def tally(found: list[tuple[float, str]], n: int, began: float) -> dict[str, Any]:
    counts = Counter(to for _, to in found)
    seconds = max((at for at, _ in found), default=began) - began
    return {
        "notifications": n,
        "seconds": round(seconds, 3),
        "per_second": round(n / seconds, 1) if seconds > 0 else None,
        "accepted": len(found),
        "missing": n - len(counts),
        "duplicates": sum(c - 1 for c in counts.values()),
    }


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


# -- the engine ------------------------------------------------------------------------


class EngineCpu:
    """CPU seconds of the engine's processes, the redis-server and this process, by role."""

    def __init__(self, supervisor: int, redis_pid: int, notifiers: int) -> None:
        self.supervisor, self.redis_pid, self.notifiers = supervisor, redis_pid, notifiers

    def read(self) -> dict[str, float]:
        kids = children(self.supervisor)  # applier, task worker, notification workers
        return {
            "applier": cpu_seconds(kids[0]) if kids else 0.0,
            "notification workers": sum(cpu_seconds(pid) for pid in kids[2:]),
            "task worker and supervisor": cpu_seconds(self.supervisor)
            + (cpu_seconds(kids[1]) if len(kids) > 1 else 0.0),
            "redis-server": cpu_seconds(self.redis_pid),
            "benchmark (providers, starts)": cpu_seconds(os.getpid()),
        }

    @staticmethod
    def per_notification(before: dict[str, float], after: dict[str, float], n: int) -> Any:
        spent = {role: (after[role] - before[role]) * 1000 / n for role in before}
        return {**{k: round(v, 2) for k, v in spent.items()}, "all": round(sum(spent.values()), 2)}


def measure_engine(
    url: str, redis_pid: int, folder: Path, found: Providers, sizes: dict[str, int], notifiers: int
) -> dict[str, dict[str, Any]]:
    from bench.notify_flow import EMAIL, SMS
    from orchestrator.entry.bootstrap import bootstrap
    from orchestrator.entry.settings import Settings

    app = bootstrap(Settings(redis_url=url, workflows=(WORKFLOWS,), data_dir=folder))
    workers = Workers(folder)
    env = worker_env(
        url,
        folder,
        {
            **found.env,
            "ORCHESTRATOR_WORKFLOWS": WORKFLOWS,
            "ORCHESTRATOR_ACCEPT_RISK": "1",  # the private server keeps no append-only file
            "ORCHESTRATOR_REQUIRE_CHANNELS": "1",  # never the console instead
            "ORCHESTRATOR_RATE_SMS": "0",
        },
    )
    argv = [sys.executable, "-m", "cli.main", "worker", "--processes", "1"]
    supervisor = workers.start("orchestrator", [*argv, "--notifiers", str(notifiers)], env)
    cpu = EngineCpu(supervisor, redis_pid, notifiers)
    finished = 0

    def run(channel: str, label: str, n: int) -> dict[str, Any]:
        nonlocal finished
        workflow = EMAIL if channel == "email" else SMS
        run_prefix = prefix(channel, label)
        jobs_before, cpu_before = notification_jobs(app.redis), cpu.read()
        taken = found.taken(channel)
        began = time.time()
        for i in range(n):
            app.client.start(workflow, {"to": address(channel, label, i), "n": i})
        starting = time.time() - began

        def got() -> list[tuple[float, str]]:
            return found.accepted(channel, run_prefix)

        def arrived() -> bool:  # filters the list only once enough messages came
            return found.taken(channel) - taken >= n and len(got()) >= n

        wait_for(arrived, f"{n} {channel} messages", workers)
        timing = tally(got(), n, began)
        finished += n
        wait_for(lambda: completed(app) >= finished, "every instance to finish", workers)
        time.sleep(0.2)  # a second copy of anything would have arrived by now
        result = {**tally(got(), n, began), "seconds": timing["seconds"]}
        result["per_second"] = timing["per_second"]
        result["starting_seconds"] = round(starting, 3)
        result["rq_jobs"] = notification_jobs(app.redis) - jobs_before
        result["provider_connections"] = found.connections(channel)
        result["cpu_ms_per_notification"] = cpu.per_notification(cpu_before, cpu.read(), n)
        return result

    results: dict[str, dict[str, Any]] = {}
    try:
        for channel in CHANNELS:
            results[f"{channel} warm-up"] = run(channel, "orchestrator-warmup", sizes["warmup"])
            results[channel] = run(channel, "orchestrator", sizes["notifications"])
    finally:
        workers.stop()
        app.redis.close()
    return results


def completed(app: Any) -> int:
    statuses = ("completed", "failed")
    return sum(int(app.redis.scard(app.keys.by_status(status))) for status in statuses)


def notification_jobs(client: redis.Redis) -> int:
    """RQ jobs the notification workers have run (RQ keeps the count per worker)."""
    from rq import Worker

    return sum(
        w.successful_job_count + w.failed_job_count
        for w in Worker.all(connection=client)
        if "notifications" in w.queue_names()
    )


# -- the RQ baseline -------------------------------------------------------------------


def rq_email(host: str, port: int, to: str) -> None:
    """One message on a connection of its own, as a plain RQ job would send it."""
    import smtplib

    message = EmailMessage()
    message["From"] = "shop@example.com"
    message["To"] = to
    message["Subject"] = "Benchmark note"
    message.set_content("Hello, this is a benchmark notification.")
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.send_message(message)


def rq_sms(base: str, sid: str, token: str, to: str) -> None:
    """One SMS, one HTTP request on a connection of its own."""
    import requests

    answer = requests.post(
        f"{base}/2010-04-01/Accounts/{sid}/Messages.json",
        data={"To": to, "From": "+15005550001", "Body": "Benchmark SMS"},
        auth=(sid, token),
        timeout=10,
    )
    answer.raise_for_status()


def measure_rq(
    url: str, folder: Path, found: Providers, sizes: dict[str, int], notifiers: int
) -> dict[str, dict[str, Any]]:
    from rq import Queue, Worker
    from rq.serializers import JSONSerializer

    client = redis.Redis.from_url(url)
    queue = Queue(RQ_QUEUE, connection=client, serializer=JSONSerializer)
    workers = Workers(folder)
    for index in range(notifiers):
        argv = [
            sys.executable,
            "-m",
            "rq.cli",
            "worker",
            "-w",
            "bench.rq_workers.QuietSimpleWorker",
        ]
        argv += ["-S", "rq.serializers.JSONSerializer", "-u", url, "-q", RQ_QUEUE]
        workers.start(f"rq-worker-{index}", argv, worker_env(url, folder, {}))
    wait_for(
        lambda: len(Worker.all(connection=client, queue=queue)) >= notifiers,
        "the RQ workers",
        workers,
    )
    smtp, sms = found.smtp, found.sms

    def run(channel: str, label: str, n: int) -> dict[str, Any]:
        def args(i: int) -> tuple[Any, ...]:
            to = address(channel, label, i)
            return (
                (smtp.host, smtp.port, to)
                if channel == "email"
                else (sms.url, sms.sid, sms.token, to)
            )

        began = time.time()
        queue.enqueue_many(
            [
                Queue.prepare_data(f"bench.notify_rate.rq_{channel}", args=args(i), result_ttl=0)
                for i in range(n)
            ]
        )

        def got() -> list[tuple[float, str]]:
            return found.accepted(channel, prefix(channel, label))

        wait_for(lambda: len(got()) >= n, f"{n} {channel} messages", workers)
        return {**tally(got(), n, began), "failed_jobs": len(queue.failed_job_registry)}

    results: dict[str, dict[str, Any]] = {}
    try:
        for channel in CHANNELS:
            results[f"{channel} warm-up"] = run(channel, "rq-warmup", max(2, notifiers * 2))
            results[channel] = run(channel, "rq", sizes["rq"])
    finally:
        workers.stop()
        client.close()
    return results


# -- the measurement ---------------------------------------------------------------------


def measure_notifications(quick: bool, notifiers: int = NOTIFIERS) -> dict[str, Any]:
    """{"rows": [...], "details": {...}}: email and SMS, the engine and raw RQ."""
    sizes = QUICK if quick else FULL
    folder = Path(tempfile.mkdtemp(prefix="notify-rate-"))
    details: dict[str, Any] = {
        "sizes": sizes,
        "provider_delay_seconds": DELAY,
        "workers": notifiers,
        "nproc": len(os.sched_getaffinity(0)),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        with private_redis() as server, providers(DELAY) as found:
            details["redis_server"] = server.version
            engine = measure_engine(server.url, server.pid, folder, found, sizes, notifiers)
            redis.Redis.from_url(server.url).flushdb()
            baseline = measure_rq(server.url, folder, found, sizes, notifiers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    details["orchestrator"], details["rq"] = engine, baseline
    details["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    rows: list[dict[str, Any]] = []
    for channel in CHANNELS:
        mine, theirs = engine[channel], baseline[channel]
        cpu = mine["cpu_ms_per_notification"]
        rows.append(
            {
                "workload": WORKLOADS[channel],
                "system": "orchestrator",
                "value": mine["per_second"],
                "note": (
                    f"{mine['notifications']} in {mine['seconds']:.2f} s, first start to last "
                    f"accepted; {notifiers} notification workers, {mine['rq_jobs']} RQ jobs, "
                    f"{mine['provider_connections']} provider connections; CPU "
                    f"{cpu['all']:.1f} ms/notification (notification workers "
                    f"{cpu['notification workers']:.1f}, applier {cpu['applier']:.1f}); "
                    f"missing {mine['missing']}, duplicates {mine['duplicates']}"
                ),
            }
        )
        how = "smtplib, a connection each" if channel == "email" else "requests.post"
        rows.append(
            {
                "workload": WORKLOADS[channel],
                "system": "rq",
                "value": theirs["per_second"],
                "note": (
                    f"{theirs['notifications']} jobs in {theirs['seconds']:.2f} s; {notifiers} "
                    f"SimpleWorkers, one job per message, {how}; missing {theirs['missing']}, "
                    f"duplicates {theirs['duplicates']}"
                ),
            }
        )
    return {"rows": rows, "details": details}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.notify_rate", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about 20 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument(
        "--notifiers",
        type=int,
        default=NOTIFIERS,
        help=f"notification worker processes (default {NOTIFIERS}, the worker command's)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = measure_notifications(args.quick, args.notifiers)
    print(f"{'workload':<50} {'system':<12} {'value':>7}  note")
    for row in result["rows"]:
        value = "-" if row["value"] is None else f"{row['value']:.1f}"
        print(f"{row['workload']:<50} {row['system']:<12} {value:>7}  {row['note']}")
    details = result["details"]
    print(
        f"nproc {details['nproc']}, load average before {details['load_average_before']}, "
        f"after {details['load_average_after']}; {time.monotonic() - started:.0f} s in all"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

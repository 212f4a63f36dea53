"""providers: misbehaving providers (flaky.py), and Twilio's callbacks out of order.

No process is killed. The SMTP server refuses some messages for a while
(4xx), some for good (5xx), keeps a few and then drops the connection or
answers after the client's timeout; the SMS go to Prism. Then `orchestrator
serve` runs as a subprocess and every SMS gets its status callbacks,
signed, duplicated and shuffled, ending with a late "sent" after
"delivered". Pass: no notification lost (a 5xx refusal is recorded failed
and never retried, not lost), a second copy only of a message whose answer
was ambiguous and within the budget, every SMS ends delivered and stays so.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import requests

from bench.chaos.cluster import Cluster, Shape, cluster
from bench.chaos.flaky import Callbacks, FlakySmtpServer
from bench.chaos.model import Report
from bench.chaos.runner import Batch, Chaos, Run
from bench.chaos.scenarios import (
    DUPLICATE_TARGET,
    Outcome,
    Row,
    _folder,
    common_rows,
    health_row,
    settle_for,
)
from orchestrator.runtime.notify.ledger import Ledger
from support.ports import free_port


@contextlib.contextmanager
def serve(c: Cluster) -> Iterator[tuple[str, str]]:
    """`python -m cli.main serve` on a free port; yields its URL and its public URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**c.pool.env, "ORCHESTRATOR_PUBLIC_URL": url}
    with (c.folder / "serve.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--port", str(port)],
            env=env,
            cwd=env["PYTHONPATH"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        with requests.Session() as session:
            session.trust_env = False
            while True:
                try:
                    if session.get(url + "/health", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"orchestrator serve did not start; see {c.folder}")
                time.sleep(0.1)
        yield url, url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def sms_sids(c: Cluster, ids: list[str]) -> tuple[dict[str, str], bool]:
    """sid -> ledger key of every SMS recorded sent. Prism answers every request with the
    same example sid; a real Twilio gives each message its own, so when the recorded sids
    are not unique each message is given one here (remembered as the channel would)."""
    ledger = Ledger(c.app.redis, c.app.keys)
    records = [
        r
        for i in ids
        for r in ledger.of_instance(i)
        if r.get("channel") == "sms" and r.get("status") == "sent"
    ]
    sids = [r.get("provider_id", "") for r in records]
    unique = len(set(sids)) == len(sids) and all(sids)
    out: dict[str, str] = {}
    for record, sid in zip(records, sids, strict=True):
        if not unique:
            sid = "SM" + hashlib.sha256(record["key"].encode()).hexdigest()[:32]
            ledger.remember_provider_id(sid, record["key"])
        out[sid] = record["key"]
    return out, unique


def excuse_permanent(report: Report, smtp: FlakySmtpServer) -> int:
    """A 5xx-refused message recorded failed, with nothing received, is not lost: drop
    those from the lost figures; returns how many."""
    kept, excused = [], 0
    for message in report.violations["lost_notification"]:
        address = message.split(":", 1)[1].split(" ", 1)[0] if ":" in message else ""
        if smtp.refused_for_good(address) and "ledger failed, provider received 0" in message:
            excused += 1
        else:
            kept.append(message)
    report.violations["lost_notification"] = kept
    report.figures["lost_notifications"] = report.figure("lost_notifications") - excused
    return excused


def excuse_ambiguous(report: Report, ambiguous: list[dict[str, Any]]) -> list[str]:
    """A copy of a message whose answer was ambiguous is the at-least-once window, even
    though the ledger counts no resend (see the report); the others stay violations."""
    digests = {str(a["message_id"]).strip("<>").split("@")[0] for a in ambiguous}
    kept, excused = [], []
    for message in report.violations["unexplained_duplicate"]:
        key = message.split(" ", 1)[0]
        if hashlib.sha256(key.encode()).hexdigest()[:32] in digests:
            excused.append(message)
        else:
            kept.append(message)
    report.violations["unexplained_duplicate"] = kept
    return excused


def providers(size: str) -> Outcome:
    quick = size != "full"
    count, over = (200, 25.0) if quick else (280, 35.0)
    drop, slow = ({10}, {30}) if quick else ({10, 210}, {30, 230})
    folder, began = _folder("providers"), time.monotonic()
    smtp = FlakySmtpServer(drop, slow)
    with cluster(folder, Shape(), smtp=smtp) as c:
        run = Run(c, seed=13)
        run.drive([Batch("pv", count, over, fail_every=0, work=0.0)], Chaos(every=None, lasts=0))
        run.settle(settle_for(size))
        sids, unique = sms_sids(c, run.ids)
        with serve(c) as (url, public):
            calls = Callbacks(url, public, c.pool.env["TWILIO_AUTH_TOKEN"], seed=17)
            ledger = Ledger(c.app.redis, c.app.keys)
            calls.run(sids, lambda key: (ledger.get(key) or {}).get("status"))
        run.settle(settle_for(size))
        statuses = Counter((ledger.get(k) or {}).get("status") for k in sids.values())
        for fault in smtp.ambiguous:  # the provider cut a notification worker off its answer
            c.faults.write({**fault, "action": "ambiguous", "roles": ["notifications"]})
        snapshot, report = run.collect()
    excused = excuse_permanent(report, smtp)
    windowed = excuse_ambiguous(report, smtp.ambiguous)
    permanent = sorted(
        a for a in {f"pv-{n:04d}@example.com" for n in range(count)} if smtp.refused_for_good(a)
    )
    once = sum(1 for a in permanent if smtp.refusals.get(a) == 1)
    delivered_events = Counter(
        str((e["event"].get("data") or {}).get("key"))
        for history in snapshot.histories.values()
        for e in history
        if e["event"]["type"] == "notification.delivered" and e["outcome"] != "ignored"
    )
    twice = sum(1 for k in sids.values() if delivered_events.get(k, 0) > 1)
    dup, pct = report.figure("duplicate_notifications"), report.figure("duplicate_percent")
    rows = [
        *common_rows(report),
        health_row(run),
        Row(
            "5xx refusals: recorded failed, tried once",
            f"{once}/{len(permanent)} ({excused} excused from lost)",
            "all",
            once == len(permanent) == excused,
        ),
        Row(
            "ambiguous SMTP answers (drop, late 250)",
            f"{len(smtp.ambiguous)}; {dup:.0f} copies ({pct:.2f}%), "
            f"{len(windowed)} only after one, ledger resends {report.figure('resends'):.0f}",
            f"copies <= {len(smtp.ambiguous)}, <= {DUPLICATE_TARGET}%",
            len(smtp.ambiguous) == len(drop | slow) and dup <= len(smtp.ambiguous),
        ),
        Row(
            "Twilio callbacks posted (signed)",
            f"{calls.posted} for {len(sids)} SMS, {len(calls.refused)} refused"
            + ("" if unique else "; sids assigned (Prism repeats one)"),
            "0 refused",
            calls.posted > 0 and not calls.refused,
        ),
        Row(
            "SMS delivered, never back after a late sent",
            f"{statuses.get('delivered', 0)}/{len(sids)} delivered, "
            f"{len(calls.regressions)} went back, {twice} told twice",
            "all, 0, 0",
            statuses.get("delivered", 0) == len(sids) > 0 and not calls.regressions and not twice,
        ),
    ]
    return Outcome("providers", rows, report, time.monotonic() - began, folder)

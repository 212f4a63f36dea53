"""Issue #18's targets as the table judges them: each rule against the figures of the
systems measured in the same run, the rows under load by their own rules."""

from __future__ import annotations

from typing import Any

from bench.targets import UNDER_LOAD, lines

THROUGHPUT = "3-step workflows/s, 2 workers, W=1000"


def judged(workload: str, **values: Any) -> tuple[bool | None, str, str]:
    rows = [{"workload": workload, "system": name, "value": v} for name, v in values.items()]
    (line,) = lines(rows, "2")
    return line.met, line.target, line.why


def test_throughput_must_be_half_again_the_fastest_peer() -> None:
    met, target, why = judged(THROUGHPUT, orchestrator=1400.0, dramatiq=1000.0, rq=100.0)
    assert (met, target) == (False, ">= 1.5x fastest peer, >= 4x RQ")
    assert "1.40x Dramatiq" in why
    assert judged(THROUGHPUT, orchestrator=1500.0, dramatiq=1000.0, celery=400.0, rq=100.0)[0]


def test_under_load_throughput_must_match_the_fastest_peer() -> None:
    label = f"{UNDER_LOAD} {THROUGHPUT}"
    met, target, _ = judged(label, orchestrator=1000.0, dramatiq=1000.0, rq=100.0)
    assert (met, target) == (True, ">= fastest peer, >= 4x RQ")
    assert judged(label, orchestrator=990.0, dramatiq=1000.0, rq=100.0)[0] is False


def test_light_latency_p50_at_most_celerys_and_p99_at_most_twice_p50() -> None:
    label = "latency p50/p99 ms at 50/s"
    assert judged(label, orchestrator=[5.0, 10.0], celery=[5.1, 10.5])[0] is True
    met, _, why = judged(label, orchestrator=[5.0, 10.5], celery=[5.1, 10.5])
    assert met is False and "p99 2.1x p50" in why  # its own tail too long
    assert judged(label, orchestrator=[5.2, 9.0], celery=[5.1, 10.5])[0] is False
    # without Celery in the run, only its own tail is judged, and the line says so
    met, _, why = judged(label, orchestrator=[5.0, 9.0])
    assert met is True and "Celery not measured" in why


def test_latency_at_500_per_second_p99_at_most_dramatiqs() -> None:
    label = "latency p50/p99 ms at 500/s"
    met, target, why = judged(label, orchestrator=[50.0, 30.0], dramatiq=[9.8, 26.4])
    assert (met, target) == (False, "p99 <= Dramatiq's") and "1.14x Dramatiq's p99" in why
    assert judged(label, orchestrator=[20.0, 26.4], dramatiq=[9.8, 26.4])[0] is True
    assert judged(label, orchestrator=[20.0, 26.4], celery=[5.0, 9.0])[0] is None  # not run


def test_under_load_latency_p99_at_most_every_peers() -> None:
    label = f"{UNDER_LOAD} latency p50/p99 ms at 500/s"
    values = {"celery": [15.0, 84.0], "dramatiq": [12.7, 26.7]}
    assert judged(label, orchestrator=[30.0, 26.0], **values)[0] is True
    met, target, why = judged(label, orchestrator=[30.0, 80.0], **values)
    assert (met, target) == (False, "p99 <= fastest peer's") and "Dramatiq" in why


def test_notifications_at_least_a_thousand_a_second() -> None:
    label = "notifications/s, SMS, HTTP answers after 100 ms"
    assert judged(label, orchestrator=999.0)[:2] == (False, ">= 1,000/s")
    assert judged(label, orchestrator=1000.0)[0] is True

"""The order workflow end to end through the Python client and a burst worker."""

from __future__ import annotations

from orchestrator.entry.bootstrap import App
from orchestrator.entry.worker import run_burst


def test_order_ships_and_declined_card_is_compensated(app: App) -> None:
    # Given two orders, one with a card that will be declined
    client = app.client
    good = client.start("order", {"order_id": "A1", "email": "a@example.com", "work_seconds": 0})
    bad = client.start(
        "order", {"order_id": "A2", "email": "b@example.com", "card": "declined", "work_seconds": 0}
    )
    # When a burst worker runs until nothing is left to do
    run_burst(app)
    # Then the good one shipped and the declined one released its stock and failed
    shipped = client.status(good)
    assert (shipped.state, shipped.status) == ("shipped", "completed")
    assert shipped.context["tracking"] == "TRK-A1"
    failed = client.status(bad)
    assert (failed.state, failed.status) == ("failed", "failed")
    assert failed.context["released"] == "R-A2"
    assert "refunded" not in failed.context
    seqs = [entry["seq"] for entry in client.history(bad)]
    assert seqs == list(range(1, len(seqs) + 1))

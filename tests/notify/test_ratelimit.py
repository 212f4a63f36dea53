"""Rate limits per channel: a burst is spread over time, shared by every worker."""

from __future__ import annotations

import itertools

import pytest

from notifiers.errors import ChannelConfigError
from orchestrator.entry.bootstrap import App
from orchestrator.runtime.notify.ratelimit import RateLimits


def test_a_burst_is_smoothed_at_the_configured_rate(app: App) -> None:
    limits = RateLimits(app.redis, app.keys, {"ORCHESTRATOR_RATE_SMS": "10"})
    # When twenty messages want to go at once
    waits = [limits.wait("sms", default=1.0) for _ in range(20)]
    # Then they are spaced 0.1 s apart (the setting beats the channel's default)
    assert waits[0] == pytest.approx(0.0, abs=0.05)
    for earlier, later in itertools.pairwise(waits):
        assert later - earlier == pytest.approx(0.1, abs=0.05)
    # And another worker (another RateLimits on the same Redis) queues behind them
    other = RateLimits(app.redis, app.keys, {"ORCHESTRATOR_RATE_SMS": "10"})
    assert other.wait("sms", default=1.0) == pytest.approx(2.0, abs=0.1)
    # While another channel is not held up
    assert limits.wait("email", default=0.0) == 0.0


@pytest.mark.parametrize("value", ["lots", "-1"])
def test_a_bad_setting_is_a_configuration_error_naming_it(app: App, value: str) -> None:
    limits = RateLimits(app.redis, app.keys, {"ORCHESTRATOR_RATE_SMS": value})
    with pytest.raises(ChannelConfigError, match="ORCHESTRATOR_RATE_SMS must be a number"):
        limits.wait("sms", default=3.0)

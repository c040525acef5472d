"""The one back-off helper (edge/backoff.py) that the capture loop, the uplink client and the
analytics bridge share."""

from __future__ import annotations

import random

import pytest

from edge.backoff import Backoff, backoff_delay


def test_without_jitter_the_delays_double_up_to_the_cap_and_reset() -> None:
    backoff = Backoff(1.0, 30.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 1.0


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_a_unit_down_for_days_still_gets_capped_delays(jitter: float) -> None:
    backoff = Backoff(0.5, 60.0, random.Random(3), jitter=jitter)
    delays = [backoff.next_delay() for _ in range(5000)]  # 2.0**5000 would overflow a float
    assert all(60.0 * (1 - jitter) <= d <= 60.0 for d in delays[-100:])
    assert backoff_delay(10**9, 0.5, 60.0, random.Random(1), jitter) <= 60.0


def test_the_injected_rng_decides_the_draws() -> None:
    one = Backoff(1.0, 30.0, random.Random(7))
    two = Backoff(1.0, 30.0, random.Random(7))
    assert [one.next_delay() for _ in range(8)] == [two.next_delay() for _ in range(8)]


def test_bad_parameters_are_refused() -> None:
    for args, kwargs in (((0.0, 1.0), {}), ((2.0, 1.0), {}), ((1.0, 2.0), {"jitter": 1.5})):
        with pytest.raises(ValueError):
            Backoff(*args, **kwargs)  # type: ignore[arg-type]

"""The uplink's pure policy: live first, backfill oldest-first within its share, backoff."""

from __future__ import annotations

import random

import pytest

from edge.backoff import Backoff
from edge.uplink.policy import (
    RECONNECT_JITTER,
    PendingItem,
    Scheduler,
    TokenBucket,
    backlog,
    split_live_backfill,
)

S = 1_000_000_000
NOW = 1_000_000 * S


def seg(camera: str, seq: int, end_s_ago: float, size: int = 500_000) -> PendingItem:
    end = NOW - int(end_s_ago * S)
    return PendingItem(camera, seq, size, end - 2 * S, end)


def test_split_puts_recent_segments_in_live_and_orders_both_oldest_first() -> None:
    items = [seg("cam1", 5, 1), seg("cam1", 1, 300), seg("cam2", 9, 3), seg("cam1", 0, 302)]
    live, old = split_live_backfill(items, NOW, live_window_s=10)
    assert [(i.camera_id, i.sequence) for i in live] == [("cam2", 9), ("cam1", 5)]
    assert [i.sequence for i in old] == [0, 1]


def test_backlog_counts_items_bytes_seconds_and_oldest_age() -> None:
    b = backlog([seg("cam1", 0, 60, 100), seg("cam1", 1, 58, 200)], NOW)
    assert (b.items, b.bytes, b.seconds, b.oldest_age_s) == (2, 300, 4.0, 60.0)
    assert backlog([], NOW).oldest_age_s == 0.0


def make_scheduler(budget: float = 1_000_000, share: float = 0.25) -> Scheduler:
    return Scheduler(budget_bytes_per_s=budget, backfill_share=share, live_window_s=10, now=0.0)


def test_live_goes_before_backfill() -> None:
    sched = make_scheduler()
    pending = [seg("cam1", 0, 500), seg("cam1", 1, 498), seg("cam1", 300, 0.5)]
    decision = sched.next(pending, 0.0, NOW)
    assert decision.item is not None and decision.item.sequence == 300 and decision.live


def test_backfill_is_oldest_first() -> None:
    sched = make_scheduler()
    decision = sched.next([seg("cam1", 7, 100), seg("cam2", 3, 400)], 0.0, NOW)
    assert decision.item is not None and decision.item.camera_id == "cam2"
    assert not decision.live


def test_backfill_keeps_to_its_share_of_the_budget() -> None:
    """Simulate 100 s of backfill only: it may use 25 % of the budget, not more."""
    budget, share = 1_000_000.0, 0.25
    sched = make_scheduler(budget, share)
    pending = [seg("cam1", i, 20_000 - i, size=100_000) for i in range(10_000)]
    sent = 0
    t = 0.0
    while t < 100.0:
        d = sched.next(pending, t, NOW)
        if d.item is None:
            t += max(d.wait_s, 0.001)
            continue
        pending.remove(d.item)
        sched.sent(d.item, d.live, t)
        sent += d.item.size
    rate = sent / 100.0
    assert budget * share * 0.9 <= rate <= budget * share * 1.1 + 100_000 / 100


def test_live_may_use_the_whole_budget_and_starves_backfill_meanwhile() -> None:
    budget = 1_000_000.0
    sched = make_scheduler(budget, 0.25)
    live_sent = backfill_sent = 0
    t = 0.0
    seq = 0
    old = [seg("cam1", i, 20_000 - i, size=50_000) for i in range(5000)]
    while t < 50.0:
        # a live segment of 100 kB arrives every 0.1 s: exactly the budget
        fresh = [seg("cam1", 100_000 + seq, 0.0, size=100_000)]
        d = sched.next(fresh + old, t, NOW)
        if d.item is None:
            t += max(d.wait_s, 0.001)
            continue
        if d.live:
            live_sent += d.item.size
            seq += 1
            t += 0.1
        else:
            old.remove(d.item)
            backfill_sent += d.item.size
        sched.sent(d.item, d.live, t)
    assert live_sent >= 0.9 * budget * 50
    assert backfill_sent <= 0.05 * live_sent


def test_token_bucket_allows_debt_then_waits_it_out() -> None:
    bucket = TokenBucket(rate=100.0, burst=100.0, now=0.0)
    assert bucket.wait_s(0.0) == 0.0
    bucket.consume(300, 0.0)  # a segment bigger than the burst still goes
    assert bucket.wait_s(0.0) == pytest.approx(2.0)
    assert bucket.wait_s(2.0) == 0.0


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    backoff = Backoff(1.0, 30.0, rng=random.Random(4), jitter=RECONNECT_JITTER)
    delays = [backoff.next_delay() for _ in range(10)]
    for n, delay in enumerate(delays):
        ceiling = min(30.0, 2.0**n)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jitter: units do not retry in step
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        TokenBucket(0, 1, 0)
    with pytest.raises(ValueError):
        Scheduler(budget_bytes_per_s=1, backfill_share=0, live_window_s=1, now=0)

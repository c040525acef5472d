"""What the uplink sends next and when: pure policy over plain data, no threads, files or sockets.

* **Live first.** A pending item closed less than ``live_window_s`` ago is *live*; it goes before
  any backlog, oldest live first so the CSU sees each camera in order while the link keeps up.
* **Backfill oldest-first within a share.** Older items are *backfill*: sent oldest first, and
  only while a second token bucket, filled at ``backfill_share`` of the budget, is not in debt.
  So a long backlog never starves live video, and live video alone may use the whole budget.
* **One budget.** Everything draws from a token bucket filled at ``budget_bytes_per_s``.
  Buckets may go into debt by one item (segments are bigger than any sensible burst), which
  keeps the long-run rate exact without splitting segments.
* **Backoff.** Reconnection delays grow exponentially with jitter, so a thousand units that lost
  the CSU together do not come back together.

Times are passed in (``now`` in seconds of a monotonic clock, wall time in ns) so every rule is
testable with plain numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PendingItem:
    """One unacknowledged item of the outbox, as the policy sees it."""

    camera_id: str
    sequence: int
    size: int
    """Bytes on the wire (the sealed segment as the vault holds it)."""
    start_wall_ns: int
    end_wall_ns: int
    """Wall-clock end of the segment: the instant it was closed on the unit."""

    @property
    def duration_s(self) -> float:
        return max(0, self.end_wall_ns - self.start_wall_ns) / 1e9


@dataclass(frozen=True, slots=True)
class Backlog:
    """How far behind the uplink is, for diagnostics (``edgectl status``)."""

    items: int
    bytes: int
    seconds: float
    """Recorded seconds of video not yet acknowledged by the CSU."""
    oldest_age_s: float
    """Age of the oldest unacknowledged item (0 when none)."""


def backlog(items: Iterable[PendingItem], now_wall_ns: int) -> Backlog:
    count = size = 0
    seconds = 0.0
    oldest: int | None = None
    for item in items:
        count += 1
        size += item.size
        seconds += item.duration_s
        oldest = item.end_wall_ns if oldest is None else min(oldest, item.end_wall_ns)
    age = max(0.0, (now_wall_ns - oldest) / 1e9) if oldest is not None else 0.0
    return Backlog(items=count, bytes=size, seconds=round(seconds, 3), oldest_age_s=round(age, 3))


def is_live(item: PendingItem, now_wall_ns: int, live_window_s: float) -> bool:
    return now_wall_ns - item.end_wall_ns < live_window_s * 1e9


def _order_key(item: PendingItem) -> tuple[int, str, int]:
    return (item.end_wall_ns, item.camera_id, item.sequence)


def split_live_backfill(
    items: Iterable[PendingItem], now_wall_ns: int, live_window_s: float
) -> tuple[list[PendingItem], list[PendingItem]]:
    """(live, backfill), each oldest first."""
    live: list[PendingItem] = []
    old: list[PendingItem] = []
    for item in items:
        (live if is_live(item, now_wall_ns, live_window_s) else old).append(item)
    live.sort(key=_order_key)
    old.sort(key=_order_key)
    return live, old


class TokenBucket:
    """Byte budget refilled at ``rate`` bytes/s up to ``burst`` bytes; may go into debt."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def tokens(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def wait_s(self, now: float) -> float:
        """Seconds until the bucket is out of debt (0 when it may send now)."""
        tokens = self.tokens(now)
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def consume(self, size: int, now: float) -> None:
        self._refill(now)
        self._tokens -= size


@dataclass(frozen=True, slots=True)
class Decision:
    item: PendingItem | None
    """What to send now; None means wait ``wait_s`` (or nothing is pending)."""
    wait_s: float
    live: bool = False


class Scheduler:
    """Chooses the next item: live first, backfill oldest-first within its share of the budget.

    Not thread-safe: owned by the uplink thread.
    """

    def __init__(
        self,
        *,
        budget_bytes_per_s: float,
        backfill_share: float,
        live_window_s: float,
        now: float,
        burst_s: float = 1.0,
    ) -> None:
        if not 0 < backfill_share <= 1:
            raise ValueError("backfill_share must be in (0, 1]")
        self.live_window_s = live_window_s
        self.total = TokenBucket(budget_bytes_per_s, budget_bytes_per_s * burst_s, now)
        backfill_rate = budget_bytes_per_s * backfill_share
        self.backfill = TokenBucket(backfill_rate, backfill_rate * burst_s, now)

    def next(self, pending: Sequence[PendingItem], now: float, now_wall_ns: int) -> Decision:
        if not pending:
            return Decision(None, 0.0)
        live, old = split_live_backfill(pending, now_wall_ns, self.live_window_s)
        total_wait = self.total.wait_s(now)
        if live:
            if total_wait > 0:
                return Decision(None, total_wait, live=True)
            return Decision(live[0], 0.0, live=True)
        wait = max(total_wait, self.backfill.wait_s(now))
        if wait > 0:
            return Decision(None, wait)
        return Decision(old[0], 0.0)

    def sent(self, item: PendingItem, live: bool, now: float) -> None:
        """Charge a sent item to the budget (and to the backfill share when it was backfill)."""
        self.total.consume(item.size, now)
        if not live:
            self.backfill.consume(item.size, now)


#: Reconnection delays of the uplink are drawn in [d/2, d] (``edge.backoff.Backoff``): spread
#: over the fleet, yet never much shorter than the doubling sequence asks.
RECONNECT_JITTER = 0.5

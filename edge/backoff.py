"""Exponential back-off with jitter: the one retry delay of the capture loop, the uplink client
and the analytics bridge.

The delay before retry ``n`` (counted from 0) is drawn uniformly in ``[d·(1 - jitter), d]`` with
``d = min(maximum, initial·2^n)``. Full jitter (1.0) spreads a fleet's retries over the whole
range, so a thousand units that lost their cameras or the CSU together do not come back
together; 0 gives the plain doubling sequence. The randomness is injected (``rng``) so tests
draw known sequences. Pure: no clock, no sleep; the caller waits.
"""

from __future__ import annotations

import math
import random


def backoff_delay(
    attempt: int, initial: float, maximum: float, rng: random.Random, jitter: float = 1.0
) -> float:
    """Delay before retry ``attempt``: uniform in ``[d·(1 - jitter), d]``, d as above.

    The exponent stops where the cap is reached: ``2.0**attempt`` overflows a float after
    1023 attempts (about four hours of a camera down), which once killed the capture thread.
    """
    ceiling = max(0, math.ceil(math.log2(maximum / initial)))
    top = min(maximum, initial * 2.0 ** min(attempt, ceiling))
    return rng.uniform(top * (1.0 - jitter), top)


class Backoff:
    """Counts consecutive failures and gives the delay before the next retry."""

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        rng: random.Random | None = None,
        *,
        jitter: float = 1.0,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError("need 0 < initial_s <= max_s")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("need 0 <= jitter <= 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.failures = 0
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not crypto

    def next_delay(self) -> float:
        """The delay before the next retry; counts one more failure."""
        delay = backoff_delay(self.failures, self.initial_s, self.max_s, self._rng, self.jitter)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """A success (or a long enough run): the next failure starts small again."""
        self.failures = 0

"""Rule schedules: when a rule is armed, in the unit's local time (pure).

A window is ``"<days> HH:MM-HH:MM"``: days ``daily``, a day (``Mon``), a range (``Mon-Fri``)
or a list (``Sat,Sun``), English three-letter names. An end at or before the start runs past
midnight and belongs to the day it starts (``Fri 22:00-06:00`` holds Saturday 03:00);
``00:00-24:00`` is the whole day. No window at all means always armed.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^\s*(\S+)\s+(\d{2}):(\d{2})-(\d{2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]
    """Weekdays (Monday 0) on which the window starts."""
    start_min: int
    end_min: int
    """Minutes after midnight; end ≤ start runs past midnight."""


def _days(text: str) -> frozenset[int]:
    text = text.lower()
    if text == "daily":
        return frozenset(range(7))
    out: set[int] = set()
    for part in text.split(","):
        ends = part.split("-")
        if len(ends) > 2 or any(e not in DAYS for e in ends):
            raise ValueError(f"{part!r}: days are daily, Mon, Mon-Fri or Sat,Sun")
        a, b = DAYS.index(ends[0]), DAYS.index(ends[-1])
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(out)


def parse_window(text: str) -> Window:
    """A schedule window; ValueError naming what is wrong."""
    m = _WINDOW.match(text)
    if m is None:
        raise ValueError(f"schedule {text!r}: expected '<days> HH:MM-HH:MM' (Mon-Fri 22:00-06:00)")
    h0, m0, h1, m1 = (int(m.group(i)) for i in range(2, 6))
    if h0 > 23 or m0 > 59 or h1 > 24 or m1 > 59 or (h1 == 24 and m1 != 0):
        raise ValueError(f"schedule {text!r}: no such time of day")
    return Window(_days(m.group(1)), h0 * 60 + m0, h1 * 60 + m1)


class Schedule:
    """Armed or not at a wall-clock time; built once per rule."""

    def __init__(self, windows: list[str], timezone: str = "Europe/Paris") -> None:
        self.windows = [parse_window(w) for w in windows]
        self.tz = zoneinfo.ZoneInfo(timezone)

    def armed(self, wall_s: float) -> bool:
        if not self.windows:
            return True
        local = datetime.fromtimestamp(wall_s, tz=self.tz)
        minute = local.hour * 60 + local.minute
        today = local.weekday()
        yesterday = (local - timedelta(days=1)).weekday()
        for w in self.windows:
            if w.end_min > w.start_min:
                if today in w.days and w.start_min <= minute < w.end_min:
                    return True
            else:  # past midnight: the evening part today, the morning part of yesterday's
                if today in w.days and minute >= w.start_min:
                    return True
                if yesterday in w.days and minute < w.end_min:
                    return True
        return False

"""Times as users type them on the command line (``--from``, ``--to``, ``--last``)."""

from __future__ import annotations

import re
from datetime import datetime

from ..errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])\Z")


def parse_duration(text: str) -> int:
    """``"10s"``, ``"5m"``, ``"2h"``, ``"1d"`` → nanoseconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ConfigError(f"{text!r}: a duration is a number followed by s, m, h or d (e.g. 10s)")
    return int(float(m.group(1)) * _UNITS[m.group(2)] * 1_000_000_000)


def parse_time(text: str, now_ns: int) -> int:
    """A point in time → ns since the epoch.

    Accepted: ``now``; ``-10s``/``-5m``/``-2h``/``-1d`` (before now); ``@1732790000`` (unix
    seconds); ISO 8601 (``2026-11-28T14:05:00``, local time unless it carries an offset or Z).
    """
    value = text.strip()
    if value == "now":
        return now_ns
    if value.startswith("-"):
        return now_ns - parse_duration(value[1:])
    if value.startswith("@"):
        try:
            return int(float(value[1:]) * 1_000_000_000)
        except ValueError:
            raise ConfigError(f"{text!r}: expected @ followed by unix seconds") from None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{text!r}: expected now, -10s, @UNIX_SECONDS or an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # the unit's local time
    return int(when.timestamp() * 1_000_000_000)


def resolve_range(
    start: str | None, end: str | None, last: str | None, now_ns: int
) -> tuple[int | None, int | None]:
    """(from, to) in ns; ``last`` means [now - last, now]."""
    if last is not None:
        if start is not None or end is not None:
            raise ConfigError("--last cannot be combined with --from/--to")
        return now_ns - parse_duration(last), now_ns
    lo = parse_time(start, now_ns) if start is not None else None
    hi = parse_time(end, now_ns) if end is not None else None
    if lo is not None and hi is not None and hi <= lo:
        raise ConfigError("--to must be after --from")
    return lo, hi

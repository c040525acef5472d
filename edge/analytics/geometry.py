"""Plane geometry in normalised frame coordinates, for rules."""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, float]


def point_in_polygon(p: Point, polygon: Sequence[Sequence[float]]) -> bool:
    """Even-odd ray casting."""
    x, y = p
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y):
            xi = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < xi:
                inside = not inside
    return inside


def side(a: Point, b: Point, p: Point) -> float:
    """Signed area: > 0 on the "forward" side of a→b (see :func:`crossing`), < 0 behind it."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def crossing(a: Point, b: Point, p: Point, q: Point) -> int:
    """+1 when the move p→q crosses segment a→b "forward", −1 "backward", 0 when it does not.

    Forward is the direction of a→b turned a quarter turn clockwise as seen on screen: for a
    line drawn left to right, forward is downward; drawn top to bottom, forward is leftward.
    Touching the line counts as not yet crossed.
    """
    s1, s2 = side(a, b, p), side(a, b, q)
    if s1 == 0 or s2 == 0 or (s1 > 0) == (s2 > 0):
        return 0
    t1, t2 = side(p, q, a), side(p, q, b)
    if (t1 > 0) == (t2 > 0) and t1 != 0 and t2 != 0:
        return 0  # crosses the infinite line outside the segment's ends
    return 1 if s2 > 0 else -1


def distance(p: Point, q: Point) -> float:
    return math.hypot(q[0] - p[0], q[1] - p[1])


def angle_between(u: Point, v: Point) -> float:
    """Angle in degrees between two vectors (0..180)."""
    nu, nv = math.hypot(*u), math.hypot(*v)
    if nu == 0 or nv == 0:
        return 0.0
    c = (u[0] * v[0] + u[1] * v[1]) / (nu * nv)
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))

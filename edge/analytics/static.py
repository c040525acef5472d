"""Abandoned objects (decree 2023-828: "objets abandonnés"): something new that stays still
where a track left it, after that track went away.

Two pieces, pure (numpy in, alerts out):

* :class:`StaticObjects` compares each frame, in cells of 8×8 pixels (luma and both chroma
  planes), with a *long-term* background learned from the first frames (a temporal median, so
  passers-by are not in it) that then follows slow changes only, and with the frames of the
  last ``STABLE_S`` seconds. A cell that differs from the long-term background but has not
  changed lately holds a *static* change; connected static cells are a static object. Street
  furniture, parked cars and anything else present when analysis started is in the background
  and never a candidate; a global brightness change (a cloud, dusk) is removed first.
* :class:`AbandonedObjectRule` keeps the static objects that were *brought*: a track was near
  them shortly before they appeared (its owner). The object is unattended while no track is
  near it; after ``min_seconds`` unattended, in the zone, while the schedule is armed, one alert.

Excluded: objects larger than ``max_size`` (vehicles), objects under a vehicle track (a parked
car), upright person-shaped objects (someone standing still, whom a motion-only unit no longer
sees move), objects nobody brought (shadows, lighting). The evaluation named 62 % false
positives on abandoned objects: these exclusions and the owner rule are what keep a bench, a
bin or a parked car from ever being one.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..config import AbandonedObjectRuleConfig
from .base import VEHICLE, Box, Track
from .geometry import point_in_polygon
from .rules import Alert, Cooldown
from .schedule import Schedule

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

CELL = 8
STABLE_S = 2.0
"""A static change has not moved for this long."""
WARMUP_FRAMES = 10
LEARN_RATE = 0.01
"""Per frame, where the scene matches the long-term background (follows dusk)."""
ABSORB_RATE = 0.0005
"""Per frame, where it does not: a change is absorbed only after many minutes."""
OWNER_LOOKBACK_S = 10.0


@dataclass(frozen=True, slots=True)
class StaticObject:
    box: Box
    since: float
    """When its cells became static (the earliest of them)."""
    cells: int


def _cells(y: U8, u: U8, v: U8, gh: int, gw: int) -> F32:
    """(3, gh, gw) cell means of luma and both chroma planes."""
    luma = y[: gh * CELL, : gw * CELL].reshape(gh, CELL, gw, CELL).mean(axis=(1, 3))
    c = CELL // 2
    cu = u[: gh * c, : gw * c].reshape(gh, c, gw, c).mean(axis=(1, 3))
    cv = v[: gh * c, : gw * c].reshape(gh, c, gw, c).mean(axis=(1, 3))
    return np.stack([luma, cu, cv]).astype(np.float32)


class StaticObjects:
    """Static changes against a long-term background; one per rule, not thread-safe."""

    def __init__(self, *, threshold: float = 20.0) -> None:
        self.threshold = threshold
        self._warmup: list[F32] = []
        self._background: F32 | None = None
        self._recent: deque[tuple[float, F32]] = deque()
        self._since: npt.NDArray[np.float64] | None = None

    def update(self, y: U8, u: U8, v: U8, t: float) -> list[StaticObject]:
        h, w = y.shape
        gh, gw = h // CELL, w // CELL
        if gh == 0 or gw == 0:
            return []
        cells = _cells(y, u, v, gh, gw)
        if self._background is None or self._background.shape != cells.shape:
            self._warmup, self._background = [cells], cells.copy()
            self._since = np.full((gh, gw), np.nan)
            return []
        if len(self._warmup) < WARMUP_FRAMES:
            self._warmup.append(cells)
            self._background = np.median(np.stack(self._warmup), axis=0).astype(np.float32)
            return []
        self._recent.append((t, cells))
        while self._recent and self._recent[0][0] < t - STABLE_S:
            self._recent.popleft()
        diff = np.abs(cells - self._background)
        diff -= np.median(diff, axis=(1, 2), keepdims=True)  # global light changes
        changed = (diff[0] > self.threshold) | (diff[1:] > self.threshold / 2).any(axis=0)
        stack = np.stack([c for _t, c in self._recent])
        steady = (stack.max(axis=0) - stack.min(axis=0)).max(axis=0) < self.threshold / 2
        full = self._recent[-1][0] - self._recent[0][0] >= STABLE_S * 0.75
        static = changed & steady & full
        assert self._since is not None
        self._since[~static] = np.nan
        self._since[static & np.isnan(self._since)] = t - STABLE_S
        rate = np.where(changed, ABSORB_RATE, LEARN_RATE).astype(np.float32)
        self._background += rate * (cells - self._background)
        return _blobs(static, self._since, gh, gw)


def _blobs(
    static: npt.NDArray[np.bool_], since: npt.NDArray[np.float64], gh: int, gw: int
) -> list[StaticObject]:
    seen = np.zeros_like(static)
    out = []
    for sy, sx in zip(*np.nonzero(static), strict=True):
        if seen[sy, sx]:
            continue
        seen[sy, sx] = True
        todo = deque([(int(sy), int(sx))])
        pts: list[tuple[int, int]] = []
        while todo:
            cy, cx = todo.popleft()
            pts.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < gh and 0 <= nx < gw and static[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    todo.append((ny, nx))
        ys = [p[0] for p in pts]
        xs = [p[1] for p in pts]
        box = (min(xs) / gw, min(ys) / gh, (max(xs) + 1) / gw, (max(ys) + 1) / gh)
        out.append(StaticObject(box, float(np.nanmin([since[p] for p in pts])), len(pts)))
    return out


def _gap(a: Box, b: Box) -> float:
    """Distance between two boxes (0 when they overlap)."""
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return math.hypot(dx, dy)


def _overlap(a: Box, b: Box) -> float:
    """Share of ``a`` covered by ``b``."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return w * h / area if area > 0 else 0.0


def _itself(obj: Box, track: Box) -> bool:
    """The track is the object (a motion blob of the object itself, before the motion
    background absorbs it), not someone near it: the track lies mostly within the object's box
    widened by a few pixels."""
    m = 0.02
    return _overlap(track, (obj[0] - m, obj[1] - m, obj[2] + m, obj[3] + m)) > 0.6


@dataclass(slots=True)
class _Left:
    box: Box
    since: float
    owners: set[int] = field(default_factory=set)
    unattended_since: float | None = None
    seen: float = 0.0


class AbandonedObjectRule:
    """Sensitivity sets how different from the background an object must be: 30 luma levels
    at 0, 20 at 0.5, 10 at 1 (chroma: half)."""

    PERSON_SHAPE = 1.5
    """Height over width (pixels) from which a static object is taken for a standing person."""
    LYING_SHAPE = 2.2
    """Width over height from which it is taken for a person lying down or a bench."""

    def __init__(self, cfg: AbandonedObjectRuleConfig, timezone: str = "Europe/Paris") -> None:
        self.cfg = cfg
        self.schedule = Schedule(cfg.schedule, timezone)
        self.static = StaticObjects(threshold=30.0 - 20.0 * cfg.sensitivity)
        self._recent_tracks: deque[tuple[float, list[tuple[int, Box]]]] = deque()
        self._left: list[_Left] = []
        self._cooldown = Cooldown(cfg.cooldown_seconds)

    def update(
        self,
        y: U8,
        u: U8,
        v: U8,
        tracks: list[Track],
        t: float,
        wall_s: float,
        aspect: float = 16 / 9,
    ) -> list[Alert]:
        objects = self.static.update(y, u, v, t)
        live = [(tr.id, tr.box) for tr in tracks if tr.history and tr.history[-1].t == t]
        self._recent_tracks.append((t, live))
        while self._recent_tracks and self._recent_tracks[0][0] < t - OWNER_LOOKBACK_S:
            self._recent_tracks.popleft()
        vehicles = [tr.box for tr in tracks if tr.category == VEHICLE]
        kept: list[_Left] = []
        for obj in objects:
            if not self._candidate(obj, vehicles, aspect):
                continue
            left = next((x for x in self._left if _overlap(x.box, obj.box) > 0.3), None)
            if left is None:
                left = _Left(obj.box, obj.since, self._owners(obj))
            left.box, left.seen = obj.box, t
            kept.append(left)
        self._left = kept
        out = []
        armed = self.schedule.armed(wall_s)
        for left in self._left:
            near = any(
                (tid in left.owners or self._lingering(tid, t))
                and _gap(left.box, box) <= self.cfg.owner_distance
                and not _itself(left.box, box)
                for tid, box in live
            )
            if near or not left.owners or not armed:
                left.unattended_since = None
                continue
            if left.unattended_since is None:
                left.unattended_since = t
            alone = t - left.unattended_since
            key = (round(left.box[0], 2), round(left.box[1], 2))
            if alone >= self.cfg.min_seconds and self._cooldown.ready(key, t):
                self._cooldown.fire(key, t)
                x1, y1, x2, y2 = left.box
                out.append(
                    Alert(
                        "abandoned_object",
                        self.cfg.name,
                        t,
                        {
                            "seconds_unattended": round(alone, 1),
                            "seconds_present": round(t - left.since, 1),
                            "box": [round(x1, 3), round(y1, 3), round(x2, 3), round(y2, 3)],
                        },
                    )
                )
        return out

    def _lingering(self, tid: int, t: float) -> bool:
        """The track has stayed within a small distance for ``STABLE_S``: someone standing by
        the object attends it, someone walking past does not."""
        boxes = [
            box
            for when, seen in self._recent_tracks
            if when >= t - STABLE_S
            for k, box in seen
            if k == tid
        ]
        if len(boxes) < 2:
            return False
        (a, b) = boxes[0], boxes[-1]
        return abs((a[0] + a[2]) - (b[0] + b[2])) / 2 < 0.02 and abs(a[3] - b[3]) < 0.02

    def _candidate(self, obj: StaticObject, vehicles: list[Box], aspect: float) -> bool:
        x1, y1, x2, y2 = obj.box
        if x2 - x1 > self.cfg.max_size or y2 - y1 > self.cfg.max_size:
            return False  # vehicle-sized
        if obj.cells < 2 or not point_in_polygon(((x1 + x2) / 2, (y1 + y2) / 2), self.cfg.zone):
            return False
        shape = (y2 - y1) / max((x2 - x1) * aspect, 1e-6)
        if shape >= self.PERSON_SHAPE:
            return False  # a person standing still
        if shape <= 1 / self.LYING_SHAPE:
            return False  # a person lying (the fallen-person rule's case), a bench
        return not any(_overlap(obj.box, box) > 0.3 for box in vehicles)

    def _owners(self, obj: StaticObject) -> set[int]:
        """Tracks near the object in the seconds before it became static."""
        owners: set[int] = set()
        for when, boxes in self._recent_tracks:
            if when > obj.since + STABLE_S:
                break
            owners.update(
                tid
                for tid, box in boxes
                if _gap(obj.box, box) <= self.cfg.owner_distance and not _itself(obj.box, box)
            )
        return owners

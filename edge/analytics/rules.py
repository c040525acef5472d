"""Alert and counting rules over tracks: pure classes over plain data, no threads or I/O.

Each rule's ``update(tracks, t)`` is called once per analysed frame with the live tracks and
the frame time in seconds (monotonic). Rules return :class:`Alert` values; the line counter
returns :class:`CountReport` values at the end of each aggregation interval. A
:class:`Cooldown` per rule (and per vehicle where the alert is about one vehicle) makes one
situation raise one alert, not a storm.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..config import (
    CameraAnalyticsConfig,
    CrowdMovementRuleConfig,
    GatheringRuleConfig,
    LineRuleConfig,
    ParkingRuleConfig,
    WrongWayRuleConfig,
)
from .base import CYCLE, PERSON, VEHICLE, Track
from .decoders import iou_matrix
from .geometry import angle_between, crossing, distance, point_in_polygon, side

FORWARD = "forward"
BACKWARD = "backward"


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    """gathering, crowd_movement, wrong_way, parking_overstay."""
    rule: str
    """Name of the rule (zone or lane) that raised it."""
    t: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CountReport:
    """Crossings of one line during [start, end): {(label, direction): count}."""

    rule: str
    start: float
    end: float
    counts: dict[tuple[str, str], int]


class Cooldown:
    """Remembers when each key last fired; ``ready`` says whether it may fire again."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: dict[object, float] = {}

    def ready(self, key: object, t: float) -> bool:
        last = self._last.get(key)
        return last is None or t - last >= self.seconds

    def fire(self, key: object, t: float) -> None:
        self._last[key] = t


def _fresh(track: Track, t: float) -> bool:
    """Seen in this very frame (not only predicted)."""
    return track.confirmed and bool(track.history) and track.history[-1].t == t


def _point_at(track: Track, t: float) -> tuple[float, float] | None:
    """The track's anchor at the last history point not later than ``t``."""
    best = None
    for p in track.history:
        if p.t <= t:
            best = (p.x, p.y)
    return best


class LineCounter:
    """Counts crossings of a line per label and direction, reported once per interval.

    Intervals are aligned on the wall clock (a 60 s interval ends at every full minute) so the
    counts of all units and lines of a city line up. Frame times are monotonic; the wall-clock
    offset (wall-clock seconds minus monotonic seconds) is taken from the first frame and kept:
    each frame's own offset jitters by milliseconds, and following it made interval ends move
    back and forth around a boundary, closing intervals again with start = end. After a gap
    without frames longer than an interval, the intervals nobody observed are skipped, not
    reported as zero.

    A track counts when it goes from beyond the hysteresis band on one side of the line to
    beyond it on the other side, through the segment: a person standing on the line and
    swaying inside the band is not counted at every sway, and a crossing counts once.
    """

    def __init__(self, cfg: LineRuleConfig) -> None:
        self.cfg = cfg
        self.a, self.b = cfg.points
        self.totals: dict[tuple[str, str], int] = {}
        """Crossings since start (diagnostics and tests)."""
        self._counts: dict[tuple[str, str], int] = {}
        self._start: float | None = None
        self._end: float | None = None
        self._wall_offset: float | None = None
        # Per track: the last point where it stood clearly (beyond the band) on one side.
        self._anchor: dict[int, tuple[float, float]] = {}
        self._length = distance(self.a, self.b)

    def _end_of_interval(self, start: float) -> float:
        period = self.cfg.interval_seconds
        offset = self._wall_offset or 0.0
        end = (math.floor((start + offset) / period) + 1) * period - offset
        # Float rounding may put a boundary at start itself: an interval never ends where it starts.
        return end if end > start else end + period

    def _clear_side(self, p: tuple[float, float]) -> int:
        """+1 / -1 when ``p`` is beyond the hysteresis band on the forward / backward side."""
        if self._length == 0:
            return 0
        d = side(self.a, self.b, p) / self._length
        if abs(d) <= self.cfg.hysteresis or d == 0:
            return 0
        return 1 if d > 0 else -1

    def update(self, tracks: list[Track], t: float, wall_offset: float = 0.0) -> list[CountReport]:
        reports = []
        if self._wall_offset is None:
            self._wall_offset = wall_offset
        if self._start is None or self._end is None:
            self._start = t
            self._end = self._end_of_interval(t)
        if t >= self._end:
            reports.append(self.flush(self._end))
            while self._end <= t:  # unobserved intervals
                self._start = self._end
                self._end = self._end_of_interval(self._start)
        alive = set()
        for track in tracks:
            alive.add(track.id)
            if not _fresh(track, t):
                continue
            now = (track.history[-1].x, track.history[-1].y)
            now_side = self._clear_side(now)
            if now_side == 0:
                continue  # inside the band: judge when it has left it, on one side or the other
            before = self._anchor.get(track.id)
            if before is None:  # first seen: where was it last clearly, if anywhere?
                for p in reversed(list(track.history)[:-1]):
                    if self._clear_side((p.x, p.y)) != 0:
                        before = (p.x, p.y)
                        break
            self._anchor[track.id] = now
            if before is None or self._clear_side(before) == now_side:
                continue
            way = crossing(self.a, self.b, before, now)
            if way:
                key = (track.label, FORWARD if way > 0 else BACKWARD)
                self._counts[key] = self._counts.get(key, 0) + 1
                self.totals[key] = self.totals.get(key, 0) + 1
        for gone in set(self._anchor) - alive:
            del self._anchor[gone]
        return reports

    def flush(self, t: float) -> CountReport:
        """Close the current interval at ``t`` (also called at shutdown)."""
        start = self._start if self._start is not None else t
        report = CountReport(self.cfg.name, start, t, dict(self._counts))
        self._counts = {}
        self._start = t
        self._end = self._end_of_interval(t)
        return report


def _in_zone(
    tracks: list[Track], t: float, zone: list[tuple[float, float]], cats: set[str]
) -> list[Track]:
    return [
        tr
        for tr in tracks
        if tr.category in cats and _fresh(tr, t) and point_in_polygon(tr.anchor, zone)
    ]


class GatheringRule:
    """At least ``min_persons`` persons in the zone for at least ``min_seconds``."""

    def __init__(self, cfg: GatheringRuleConfig) -> None:
        self.cfg = cfg
        self._since: float | None = None
        self._cooldown = Cooldown(cfg.cooldown_seconds)

    def update(self, tracks: list[Track], t: float) -> list[Alert]:
        people = _in_zone(tracks, t, self.cfg.zone, {PERSON})
        if len(people) < self.cfg.min_persons:
            self._since = None
            return []
        if self._since is None:
            self._since = t
        held = t - self._since
        if held >= self.cfg.min_seconds and self._cooldown.ready(None, t):
            self._cooldown.fire(None, t)
            return [
                Alert(
                    "gathering",
                    self.cfg.name,
                    t,
                    {"persons": len(people), "seconds": round(held, 2)},
                )
            ]
        return []


class CrowdMovementRule:
    """Sudden rise of the crowd's mean speed against its baseline, or sudden dispersal."""

    def __init__(self, cfg: CrowdMovementRuleConfig) -> None:
        self.cfg = cfg
        self._baseline: float | None = None
        self._baseline_since: float | None = None
        self._baseline_t: float | None = None
        self._spread: deque[tuple[float, float]] = deque()
        self._cooldown = Cooldown(cfg.cooldown_seconds)

    def _speed(self, track: Track, t: float) -> float | None:
        then = _point_at(track, t - self.cfg.window_seconds)
        first = track.history[0]
        if then is None:
            if t - first.t < self.cfg.window_seconds / 2:
                return None
            then, t0 = (first.x, first.y), first.t
        else:
            t0 = max(p.t for p in track.history if p.t <= t - self.cfg.window_seconds)
        return distance(then, (track.history[-1].x, track.history[-1].y)) / max(t - t0, 1e-6)

    def update(self, tracks: list[Track], t: float) -> list[Alert]:
        people = _in_zone(tracks, t, self.cfg.zone, {PERSON})
        speeds = [s for s in (self._speed(tr, t) for tr in people) if s is not None]
        out: list[Alert] = []
        if len(people) < self.cfg.min_persons:
            self._spread.clear()
        else:
            xs = [tr.anchor[0] for tr in people]
            ys = [tr.anchor[1] for tr in people]
            cx, cy = sum(xs) / len(xs), sum(ys) / len(ys)
            spread = sum(math.hypot(x - cx, y - cy) for x, y in zip(xs, ys, strict=True)) / len(xs)
            self._spread.append((t, spread))
            while self._spread and self._spread[0][0] < t - self.cfg.window_seconds:
                self._spread.popleft()
            earliest = self._spread[0][1]
            if earliest > 0 and spread / earliest >= self.cfg.dispersal_factor:
                out.append(
                    Alert(
                        "crowd_movement",
                        self.cfg.name,
                        t,
                        {
                            "cause": "dispersal",
                            "persons": len(people),
                            "spread_ratio": round(spread / earliest, 2),
                        },
                    )
                )
        if len(speeds) >= self.cfg.min_persons:
            mean = sum(speeds) / len(speeds)
            warmed = (
                self._baseline is not None
                and self._baseline_since is not None
                and t - self._baseline_since >= 2 * self.cfg.window_seconds
            )
            floor = self.cfg.min_speed / self.cfg.speed_factor
            if (
                warmed
                and self._baseline is not None
                and mean >= self.cfg.min_speed
                and mean >= self.cfg.speed_factor * max(self._baseline, floor)
            ):
                out.append(
                    Alert(
                        "crowd_movement",
                        self.cfg.name,
                        t,
                        {
                            "cause": "speed",
                            "persons": len(speeds),
                            "mean_speed": round(mean, 4),
                            "baseline_speed": round(self._baseline, 4),
                        },
                    )
                )
            else:
                # The baseline follows the crowd's normal pace slowly (time constant of ten
                # windows), so a sudden change stands out against it for several seconds.
                if self._baseline is None or self._baseline_t is None:
                    self._baseline, self._baseline_since = mean, t
                else:
                    alpha = min(1.0, (t - self._baseline_t) / (10 * self.cfg.window_seconds))
                    self._baseline += alpha * (mean - self._baseline)
                self._baseline_t = t
        if out and self._cooldown.ready(None, t):
            self._cooldown.fire(None, t)
            return out[:1]
        return []


class WrongWayRule:
    """A vehicle moving in the lane at more than ``max_angle_degrees`` from its direction."""

    def __init__(self, cfg: WrongWayRuleConfig) -> None:
        self.cfg = cfg
        self._cooldown = Cooldown(cfg.cooldown_seconds)

    def update(self, tracks: list[Track], t: float) -> list[Alert]:
        out = []
        for tr in _in_zone(tracks, t, self.cfg.zone, {VEHICLE, CYCLE}):
            inside = [p for p in tr.history if point_in_polygon((p.x, p.y), self.cfg.zone)]
            start, end = inside[0], inside[-1]
            move = (end.x - start.x, end.y - start.y)
            if math.hypot(*move) < self.cfg.min_distance:
                continue
            angle = angle_between(move, self.cfg.direction)
            if angle > self.cfg.max_angle_degrees and self._cooldown.ready(tr.id, t):
                self._cooldown.fire(tr.id, t)
                out.append(
                    Alert(
                        "wrong_way",
                        self.cfg.name,
                        t,
                        {"track": tr.id, "label": tr.label, "angle_degrees": round(angle, 1)},
                    )
                )
        return out


class ParkingRule:
    """A vehicle stationary in the zone for longer than ``max_seconds``.

    A parked vehicle hidden for a while (a bus stops in front) comes back as a new track; a new
    track whose box overlaps a recently lost stationary one inherits its start time, so the
    blue-zone clock does not restart.
    """

    def __init__(self, cfg: ParkingRuleConfig, *, grace_seconds: float = 120.0) -> None:
        self.cfg = cfg
        self.grace_seconds = grace_seconds
        # track id -> (since, reference anchor, box)
        self._spots: dict[
            int, tuple[float, tuple[float, float], tuple[float, float, float, float]]
        ] = {}
        self._lost: list[
            tuple[float, float, tuple[float, float, float, float]]
        ] = []  # (lost at, since, box)
        self._cooldown = Cooldown(cfg.cooldown_seconds)

    def update(self, tracks: list[Track], t: float) -> list[Alert]:
        present = {tr.id: tr for tr in _in_zone(tracks, t, self.cfg.zone, {VEHICLE})}
        alive = {tr.id for tr in tracks}
        for tid in list(self._spots):
            if tid not in alive:
                since, _ref, box = self._spots.pop(tid)
                self._lost.append((t, since, box))
        self._lost = [lost for lost in self._lost if t - lost[0] <= self.grace_seconds]
        out = []
        for tid, tr in present.items():
            spot = self._spots.get(tid)
            if spot is None or distance(spot[1], tr.anchor) > self.cfg.stationary_tolerance:
                since = t
                if spot is None:
                    since = self._inherit(tr, t)
                self._spots[tid] = (since, tr.anchor, tr.box)
                spot = self._spots[tid]
            stayed = t - spot[0]
            if stayed > self.cfg.max_seconds and self._cooldown.ready(tid, t):
                self._cooldown.fire(tid, t)
                out.append(
                    Alert(
                        "parking_overstay",
                        self.cfg.name,
                        t,
                        {"track": tid, "label": tr.label, "seconds": round(stayed, 1)},
                    )
                )
        for tid in set(self._spots) - set(present):
            if tid in alive:
                del self._spots[tid]  # left the zone: the clock stops
        return out

    def _inherit(self, tr: Track, t: float) -> float:
        for k, (_lost_at, since, box) in enumerate(self._lost):
            if iou_matrix([box], [tr.box])[0, 0] > 0.5:
                del self._lost[k]
                return since
        return t


class RuleSet:
    """All rules of one camera."""

    def __init__(self, cfg: CameraAnalyticsConfig, timezone: str = "Europe/Paris") -> None:
        # Local: the decree's rules build on Alert and Cooldown from this module.
        from .fire import FireRule
        from .static import AbandonedObjectRule
        from .zone_rules import DensityRule, FallenPersonRule, IntrusionRule

        self.lines = [LineCounter(c) for c in cfg.lines]
        self.rules: list[GatheringRule | CrowdMovementRule | WrongWayRule | ParkingRule] = [
            *(GatheringRule(c) for c in cfg.gatherings),
            *(CrowdMovementRule(c) for c in cfg.crowd_movements),
            *(WrongWayRule(c) for c in cfg.wrong_ways),
            *(ParkingRule(c) for c in cfg.parkings),
        ]
        ground = cfg.ground
        self.zone_rules: list[IntrusionRule | DensityRule] = [
            *(IntrusionRule(c, timezone) for c in cfg.intrusions),
            *(
                DensityRule(c, ground.image, ground.world, timezone)
                for c in cfg.densities
                if ground is not None
            ),
        ]
        self.fallen = [FallenPersonRule(c, timezone) for c in cfg.fallen_persons]
        self.fires = [FireRule(c, timezone) for c in cfg.fires]
        self.abandoned = [AbandonedObjectRule(c, timezone) for c in cfg.abandoned_objects]

    def update(
        self,
        tracks: list[Track],
        t: float,
        wall_offset: float = 0.0,
        planes: tuple[npt.NDArray[np.uint8], ...] | None = None,
    ) -> tuple[list[Alert], list[CountReport]]:
        """``planes``: the analysed frame's (y, u, v), for the rules that look at pixels (fire,
        abandoned objects); without them only the track rules run."""
        wall = t + wall_offset
        alerts = [a for rule in self.rules for a in rule.update(tracks, t)]
        alerts += [a for rule in self.zone_rules for a in rule.update(tracks, t, wall)]
        aspect = 16 / 9
        if planes is not None:
            y, u, v = planes
            aspect = y.shape[1] / y.shape[0]
            alerts += [a for rule in self.fires for a in rule.update(y, u, v, t, wall)]
            alerts += [
                a for rule in self.abandoned for a in rule.update(y, u, v, tracks, t, wall, aspect)
            ]
        alerts += [a for rule in self.fallen for a in rule.update(tracks, t, wall, aspect)]
        reports = [r for line in self.lines for r in line.update(tracks, t, wall_offset)]
        return alerts, reports

    def flush(self, t: float) -> list[CountReport]:
        """Close every line's interval at ``t``; an interval that would be empty in time is
        not reported (its successor starts where it would have)."""
        return [r for r in (line.flush(t) for line in self.lines) if r.end > r.start]

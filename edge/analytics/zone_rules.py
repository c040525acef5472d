"""The decree's track rules (decree 2023-828): presence in a forbidden zone, a person on the
ground, excessive density. Pure classes over plain data, like :mod:`edge.analytics.rules`.

Each ``update(tracks, t, wall_s)`` is called once per analysed frame with the live tracks, the
frame time (monotonic seconds) and the same instant on the wall clock (schedules are in local
time). A rule outside its schedule forgets what it was timing, so an alert never covers time
when the rule was not armed. Sensitivity 0.5 applies the configured thresholds as written;
higher values make a rule more eager, lower values more reluctant.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..config import DensityRuleConfig, FallenPersonRuleConfig, IntrusionRuleConfig
from .base import CYCLE, OTHER, PERSON, VEHICLE, Box, Track
from .geometry import distance, point_in_polygon
from .ground import area_m2, homography
from .rules import Alert, Cooldown
from .schedule import Schedule

_CATEGORY = {"person": PERSON, "vehicle": VEHICLE, "cycle": CYCLE, "object": OTHER}


def _fresh(track: Track, t: float) -> bool:
    return track.confirmed and bool(track.history) and track.history[-1].t == t


def _gap(a: Box, b: Box) -> float:
    """Distance between two boxes (0 when they touch or overlap)."""
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return float((dx * dx + dy * dy) ** 0.5)


def _area(track: Track) -> float:
    x1, y1, x2, y2 = track.box
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


class IntrusionRule:
    """A person, vehicle or cycle (or, motion-only, any moving object) inside a forbidden zone
    for ``min_seconds`` while the schedule is armed; one alert per track and cooldown.

    Sensitivity sets the smallest object considered (birds, leaves and noise are smaller):
    0.4 % of the frame at 0, 0.05 % at 1.
    """

    def __init__(self, cfg: IntrusionRuleConfig, timezone: str = "Europe/Paris") -> None:
        self.cfg = cfg
        self.schedule = Schedule(cfg.schedule, timezone)
        self.categories = {_CATEGORY[c] for c in cfg.classes}
        self.min_area = 0.0005 + (1.0 - cfg.sensitivity) * 0.0035
        self._since: dict[int, float] = {}
        self._cooldown = Cooldown(cfg.cooldown_seconds)

    def update(self, tracks: list[Track], t: float, wall_s: float) -> list[Alert]:
        if not self.schedule.armed(wall_s):
            self._since.clear()
            return []
        inside = {
            tr.id: tr
            for tr in tracks
            if _fresh(tr, t)
            and tr.category in self.categories
            and _area(tr) >= self.min_area
            and point_in_polygon(tr.anchor, self.cfg.zone)
        }
        for tid in set(self._since) - set(inside):
            del self._since[tid]
        out = []
        for tid, tr in inside.items():
            since = self._since.setdefault(tid, t)
            if t - since >= self.cfg.min_seconds and self._cooldown.ready(tid, t):
                self._cooldown.fire(tid, t)
                out.append(
                    Alert(
                        "intrusion",
                        self.cfg.name,
                        t,
                        {"track": tid, "label": tr.label, "seconds": round(t - since, 1)},
                    )
                )
        return out


@dataclass(slots=True)
class _Posture:
    upright_seen: bool = False
    height: float = 0.0
    """Height of the upright box (normalised): a lying person is about as long."""
    lying_since: float | None = None
    lying_at: tuple[float, float] = (0.0, 0.0)


class FallenPersonRule:
    """A person track that was seen upright, becomes horizontal (box wider than high on screen
    by ``ratio``) and stays so, nearly in place, for ``min_seconds``.

    Having been upright is what tells a fall from a bag, a bench or a car (always wide); staying
    in place is what tells it from someone bending to tie a lace. A fall changes the box so much
    that a tracker often starts a new track for the lying person: a track that was upright
    within ``FALL_S`` seconds, touching the new box, counts as the same person. Sensitivity
    sets the width to height ratio that counts as lying: 1.6 at 0, 1.3 at 0.5, 1.0 at 1.
    """

    UPRIGHT = 1.2
    """Height over width (pixels) above which a person stands."""
    MAX_DRIFT = 0.04
    """How far (normalised) a lying person may move and still be "staying"."""
    FALL_S = 5.0
    LENGTH = 0.6
    """A lying person is at least this share of their standing height long (on screen)."""
    NEAR = 0.05

    def __init__(self, cfg: FallenPersonRuleConfig, timezone: str = "Europe/Paris") -> None:
        self.cfg = cfg
        self.schedule = Schedule(cfg.schedule, timezone)
        self.categories = {_CATEGORY[c] for c in cfg.classes}
        self.ratio = 1.6 - 0.6 * cfg.sensitivity
        self._posture: dict[int, _Posture] = {}
        self._upright: deque[tuple[float, Box]] = deque()
        self._cooldown = Cooldown(cfg.cooldown_seconds)

    def _fell_from_upright(self, box: Box) -> _Posture:
        heights = [u[3] - u[1] for _t, u in self._upright if _gap(box, u) <= self.NEAR]
        return _Posture(bool(heights), max(heights, default=0.0))

    def update(
        self, tracks: list[Track], t: float, wall_s: float, aspect: float = 16 / 9
    ) -> list[Alert]:
        """``aspect``: the frame's width over its height (boxes are normalised per axis)."""
        alive = {tr.id for tr in tracks}
        for tid in set(self._posture) - alive:
            del self._posture[tid]
        armed = self.schedule.armed(wall_s)
        while self._upright and self._upright[0][0] < t - self.FALL_S:
            self._upright.popleft()
        out = []
        for tr in tracks:
            if not _fresh(tr, t) or tr.category not in self.categories:
                continue
            x1, y1, x2, y2 = tr.box
            w_px, h_px = (x2 - x1) * aspect, max(y2 - y1, 1e-6)
            p = self._posture.get(tr.id)
            if p is None:
                p = self._posture[tr.id] = self._fell_from_upright(tr.box)
            centre = ((x1 + x2) / 2, (y1 + y2) / 2)
            if h_px / max(w_px, 1e-6) >= self.UPRIGHT:
                # The tallest it stood: a blob shrinking as a walker leaves a case behind
                # must not make the case "as long as the person".
                p.upright_seen, p.lying_since, p.height = True, None, max(p.height, y2 - y1)
                self._upright.append((t, tr.box))
                continue
            # As long as the person was tall: a bag set down by a walker is wide, not long.
            long_enough = w_px >= self.LENGTH * p.height
            lying = (
                w_px / h_px >= self.ratio
                and long_enough
                and point_in_polygon(tr.anchor, self.cfg.zone)
            )
            if not (lying and p.upright_seen and armed):
                p.lying_since = None
                continue
            if p.lying_since is None or distance(p.lying_at, centre) > self.MAX_DRIFT:
                p.lying_since, p.lying_at = t, centre
            held = t - p.lying_since
            if held >= self.cfg.min_seconds and self._cooldown.ready(tr.id, t):
                self._cooldown.fire(tr.id, t)
                out.append(
                    Alert(
                        "person_on_ground",
                        self.cfg.name,
                        t,
                        {"track": tr.id, "label": tr.label, "seconds": round(held, 1)},
                    )
                )
        return out


class DensityRule:
    """More than ``max_per_m2`` persons per square metre of ground in the zone (area from the
    ground calibration), at least ``min_persons``, for ``min_seconds``.

    Sensitivity scales the limit: × 1.5 at 0, × 1 at 0.5, × 0.5 at 1.
    """

    RECENT_S = 1.0

    def __init__(
        self,
        cfg: DensityRuleConfig,
        image: list[tuple[float, float]],
        world: list[tuple[float, float]],
        timezone: str = "Europe/Paris",
    ) -> None:
        self.cfg = cfg
        self.schedule = Schedule(cfg.schedule, timezone)
        # To the square millimetre: a solved homography is exact only to rounding (60 m² came
        # out as 59.999999999999986), and "more than" the limit must not hang on that last bit.
        self.area_m2 = round(area_m2(homography(image, world), cfg.zone), 6)
        self.limit = cfg.max_per_m2 * (1.5 - cfg.sensitivity)
        self._since: float | None = None
        self._cooldown = Cooldown(cfg.cooldown_seconds)

    def update(self, tracks: list[Track], t: float, wall_s: float) -> list[Alert]:
        # Seen in the last second, not only in this frame: in a crowd a detector misses some
        # people in every frame, and the tracker holds them meanwhile.
        people = [
            tr
            for tr in tracks
            if tr.confirmed
            and tr.history
            and t - tr.history[-1].t <= self.RECENT_S
            and tr.category == PERSON
            and point_in_polygon(tr.anchor, self.cfg.zone)
        ]
        density = len(people) / self.area_m2 if self.area_m2 > 0 else 0.0
        if (
            not self.schedule.armed(wall_s)
            or len(people) < self.cfg.min_persons
            or density <= self.limit
        ):
            self._since = None
            return []
        if self._since is None:
            self._since = t
        held = t - self._since
        if held >= self.cfg.min_seconds and self._cooldown.ready(None, t):
            self._cooldown.fire(None, t)
            return [
                Alert(
                    "excessive_density",
                    self.cfg.name,
                    t,
                    {
                        "persons": len(people),
                        "area_m2": round(self.area_m2, 1),
                        "per_m2": round(density, 2),
                        "seconds": round(held, 1),
                    },
                )
            ]
        return []

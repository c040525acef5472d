"""Geometry and ground truth of the synthetic street scene, as pure functions of the frame index.

The scene is a street seen from across the road: a façade with windows and doors at the top,
a pavement, a two-lane road with a zebra crossing, and a near pavement at the bottom. Actors
move on periodic tracks: pedestrians walk along both pavements in both directions or cross the
road (up or down), vehicles drive along both lanes in opposite directions, and an optional
"intruder" moves back and forth entirely inside a privacy-mask polygon (leak tests). External
images can be added as sprites (analytics tests composite real photographs this way).

Nothing here draws pixels or keeps time: every position is a function of ``(index, fps)`` and
the seed, so ground truth can be asked for any frame, in any order, by tests that count what an
analytics pipeline should have seen. :mod:`edge.capture.synthetic` renders it.

Scale: the frame width stands for about 20 m of street, so walking speeds (1.0–1.8 m/s) and
urban driving speeds (20–50 km/h) give plausible pixel speeds at any resolution.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Direction = Literal["left", "right", "up", "down"]

#: Vertical layout, as fractions of the frame height.
FACADE_BOTTOM = 0.50
FAR_PAVEMENT_BOTTOM = 0.62
LANE_DIVIDER = 0.75
ROAD_BOTTOM = 0.88
#: Horizontal extent of the zebra crossing, as fractions of the frame width.
CROSSING_X = (0.18, 0.30)
#: Tops of the two storeys of windows (upper floor, ground floor) and the windows' height, as
#: fractions of the frame height; each window has a painted frame this many pixels wide.
WINDOW_TOPS = (0.05, 0.26)
WINDOW_HEIGHT = 0.13
WINDOW_FRAME_PX = 2

_STREET_METRES = 20.0


@dataclass(frozen=True, slots=True)
class SceneObject:
    """One visible object of one frame, in pixels of the frame.

    ``id`` is stable for one pass of an actor across the scene and never reused in a run
    (``"pedestrian-2.5"`` is actor 2 on its 5th pass), so a tracker should keep one track per id.
    ``bbox`` is ``(x0, y0, x1, y1)`` with exclusive ends, clipped to the frame; ``centre`` is
    the centre of the whole (unclipped) object, which is what line crossings are judged on.
    """

    kind: str
    id: str
    bbox: tuple[int, int, int, int]
    centre: tuple[float, float]
    direction: Direction
    velocity: tuple[float, float]
    """Pixels per second along x and y."""


@dataclass(frozen=True, slots=True)
class Crossing:
    """An object whose centre crossed a counting line between frames ``index - 1`` and ``index``."""

    id: str
    kind: str
    index: int
    direction: Direction


@dataclass(frozen=True, slots=True)
class Track:
    """A periodic straight path: a pass lasts ``travel_s`` seconds, then ``gap_s`` of absence.

    ``travel_s=None`` means a single endless pass. ``start`` is the top-left corner at the
    beginning of a pass; ``phase_s`` shifts the actor in time so actors do not move in step.
    """

    kind: str
    number: int
    size: tuple[int, int]
    start: tuple[float, float]
    velocity: tuple[float, float]
    travel_s: float | None
    gap_s: float = 0.0
    phase_s: float = 0.0
    style: int = 0
    """Seeded choice of colours, for the renderer."""

    def at(self, t: float) -> tuple[int, float] | None:
        """``(pass number, seconds into the pass)`` at scene time ``t``, or None between passes."""
        if self.travel_s is None:
            return 0, t
        period = self.travel_s + self.gap_s
        u = t + self.phase_s
        number = math.floor(u / period)
        local = u - number * period
        if local >= self.travel_s:
            return None
        return number, local

    @property
    def direction(self) -> Direction:
        vx, vy = self.velocity
        if abs(vx) >= abs(vy):
            return "right" if vx >= 0 else "left"
        return "down" if vy >= 0 else "up"


@dataclass(frozen=True, slots=True)
class PingPong:
    """The intruder's path: back and forth along a horizontal run of allowed positions."""

    y: int
    x_min: int
    x_max: int
    size: int
    speed: float

    def x_at(self, t: float) -> float:
        span = self.x_max - self.x_min
        if span <= 0:
            return float(self.x_min)
        u = (t * self.speed) % (2 * span)
        return self.x_min + (u if u <= span else 2 * span - u)


@dataclass(frozen=True, slots=True)
class Window:
    """One window of the façade, in pixels of the frame (exclusive ends).

    ``storey`` 0 is the upper floor, 1 the ground floor; ``box`` is the glass, ``outer`` adds
    the painted frame. The seeded renderer decides which windows are lit; where they are is
    fixed by the frame size, so privacy masks and tests can be checked against it.
    """

    storey: int
    column: int
    box: tuple[int, int, int, int]

    @property
    def outer(self) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = self.box
        f = WINDOW_FRAME_PX
        return x0 - f, y0 - f, x1 + f, y1 + f


def window_bay(width: int) -> int:
    """Horizontal spacing of the façade's windows, in pixels: one window per bay."""
    return max(16, width // 8)


def windows(width: int, height: int) -> list[Window]:
    """Every window of the façade at this frame size: the scene's privacy ground truth."""
    bay = window_bay(width)
    win_w, win_h = bay // 2, round(WINDOW_HEIGHT * height)
    out: list[Window] = []
    for storey, top_fraction in enumerate(WINDOW_TOPS):
        top = round(top_fraction * height)
        for column, x0 in enumerate(range(bay // 4, width - win_w, bay)):
            out.append(Window(storey, column, (x0, top, x0 + win_w, top + win_h)))
    return out


def _round_even(value: float) -> int:
    return 2 * math.floor(value / 2 + 0.5)


class Scene:
    """Layout and actors of one deterministic scene at one frame size.

    ``sprite_specs`` are ``(kind, (w, h), start, velocity, repeat_s)`` tuples (the renderer owns
    the images); ``intruder_polygon`` is in normalised coordinates, like a privacy mask.
    """

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        *,
        seed: int = 1,
        pedestrians: int = 4,
        vehicles: int = 2,
        intruder_polygon: Sequence[tuple[float, float]] | None = None,
        sprite_specs: Sequence[
            tuple[str, tuple[int, int], tuple[float, float], tuple[float, float], float | None]
        ] = (),
    ) -> None:
        self.width = width
        self.height = height
        self.fps = fps
        self.seed = seed
        self.px_per_m = width / _STREET_METRES
        rng = random.Random(f"edge-scene-{seed}")  # noqa: S311 - a scene, not a secret
        self.tracks: list[Track] = []
        for k in range(pedestrians):
            self.tracks.append(self._pedestrian(k, rng))
        for k in range(vehicles):
            self.tracks.append(self._vehicle(k, rng))
        for k, (kind, size, start, velocity, repeat_s) in enumerate(sprite_specs):
            self.tracks.append(Track(kind, k, size, start, velocity, repeat_s))
        self.intruder: PingPong | None = None
        if intruder_polygon is not None:
            self.intruder = intruder_path(intruder_polygon, width, height, self.px_per_m)

    # --- actors ------------------------------------------------------------------------------

    def _pedestrian(self, k: int, rng: random.Random) -> Track:
        w, h = self.width, self.height
        speed = rng.uniform(1.0, 1.8) * self.px_per_m
        gap = rng.uniform(0.5, 4.0)
        phase = rng.uniform(0.0, 10.0)
        style = rng.randrange(1 << 16)
        if k % 3 == 2:  # crosses the road on the zebra crossing, towards or away from us
            size = (_round_even(0.035 * h), _round_even(0.16 * h))
            x = rng.uniform(CROSSING_X[0] * w, CROSSING_X[1] * w - size[0])
            top = FACADE_BOTTOM * h + 0.06 * h - size[1]  # feet on the far pavement
            bottom = float(h)  # leaves through the bottom edge
            travel = (bottom - top) / speed
            if (k // 3) % 2 == 0:
                return Track(
                    "pedestrian", k, size, (x, top), (0.0, speed), travel, gap, phase, style
                )
            return Track(
                "pedestrian", k, size, (x, bottom), (0.0, -speed), travel, gap, phase, style
            )
        far = k % 3 == 0
        scale = 0.14 if far else 0.17
        size = (_round_even(scale * 0.25 * h), _round_even(scale * h))
        feet = (FACADE_BOTTOM + 0.08 if far else 0.97) * h
        travel = (w + size[0]) / speed
        rightwards = (k // 3) % 2 == (0 if far else 1)
        if rightwards:
            start = (-float(size[0]), feet - size[1])
            return Track("pedestrian", k, size, start, (speed, 0.0), travel, gap, phase, style)
        start = (float(w), feet - size[1])
        return Track("pedestrian", k, size, start, (-speed, 0.0), travel, gap, phase, style)

    def _vehicle(self, k: int, rng: random.Random) -> Track:
        w, h = self.width, self.height
        speed = rng.uniform(20.0, 50.0) / 3.6 * self.px_per_m
        gap = rng.uniform(1.0, 6.0)
        phase = rng.uniform(0.0, 10.0)
        style = rng.randrange(1 << 16)
        size = (_round_even(4.5 * self.px_per_m), _round_even(0.10 * h))
        travel = (w + size[0]) / speed
        if k % 2 == 0:  # near lane, left to right
            y = (ROAD_BOTTOM - 0.01) * h - size[1]
            return Track(
                "vehicle", k, size, (-float(size[0]), y), (speed, 0.0), travel, gap, phase, style
            )
        y = (LANE_DIVIDER - 0.01) * h - size[1]
        return Track("vehicle", k, size, (float(w), y), (-speed, 0.0), travel, gap, phase, style)

    # --- ground truth ------------------------------------------------------------------------

    def placements(self, index: int) -> list[tuple[Track | None, SceneObject, float]]:
        """Every visible object at ``index`` with its track (None for the intruder) and the
        seconds into its pass (the renderer animates legs with it), far objects first."""
        t = index / self.fps
        out: list[tuple[Track | None, SceneObject, float]] = []
        for track in self.tracks:
            where = track.at(t)
            if where is None:
                continue
            number, local = where
            x = track.start[0] + track.velocity[0] * local
            y = track.start[1] + track.velocity[1] * local
            obj = self._object(track.kind, f"{track.kind}-{track.number}.{number}", x, y, track)
            if obj is not None:
                out.append((track, obj, local))
        if self.intruder is not None:
            p = self.intruder
            x = _round_even(p.x_at(t))
            bbox = (x, p.y, x + p.size, p.y + p.size)
            centre = (x + p.size / 2, p.y + p.size / 2)
            span = 2 * max(p.x_max - p.x_min, 1)
            moving_right = (t * p.speed) % span <= span / 2
            vel = (p.speed if moving_right else -p.speed, 0.0)
            direction: Direction = "right" if moving_right else "left"
            out.append(
                (None, SceneObject("intruder", "intruder-0", bbox, centre, direction, vel), t)
            )
        out.sort(key=lambda item: (item[1].kind != "intruder", item[1].bbox[3]))
        return out

    def _object(
        self, kind: str, ident: str, x: float, y: float, track: Track
    ) -> SceneObject | None:
        w, h = track.size
        xi, yi = _round_even(x), _round_even(y)
        bbox = (max(xi, 0), max(yi, 0), min(xi + w, self.width), min(yi + h, self.height))
        if bbox[0] >= bbox[2] or bbox[1] >= bbox[3]:
            return None
        centre = (xi + w / 2, yi + h / 2)
        return SceneObject(kind, ident, bbox, centre, track.direction, track.velocity)

    def objects_at(self, index: int) -> list[SceneObject]:
        """The ground truth of frame ``index``: every object at least partly in the frame."""
        return [obj for _track, obj, _local in self.placements(index)]

    def crossings(
        self, *, x: float | None = None, y: float | None = None, start: int = 0, stop: int
    ) -> list[Crossing]:
        """Objects whose centre crossed the vertical line ``x`` or the horizontal line ``y``
        (normalised coordinates) between consecutive frames of ``[start, stop)``, in order."""
        if (x is None) == (y is None):
            raise ValueError("give exactly one of x (a vertical line) or y (a horizontal line)")
        line = x * self.width if x is not None else (y or 0.0) * self.height
        axis = 0 if x is not None else 1
        out: list[Crossing] = []
        previous: dict[str, SceneObject] = {}
        for index in range(start, stop):
            current = {obj.id: obj for obj in self.objects_at(index)}
            for ident, obj in current.items():
                before = previous.get(ident)
                if before is None:
                    continue
                a, b = before.centre[axis], obj.centre[axis]
                if a < line <= b:
                    out.append(Crossing(ident, obj.kind, index, "right" if axis == 0 else "down"))
                elif b < line <= a:
                    out.append(Crossing(ident, obj.kind, index, "left" if axis == 0 else "up"))
            previous = current
        return out


# --- intruder placement ----------------------------------------------------------------------


def inside_polygon(
    px: npt.NDArray[np.float64], py: npt.NDArray[np.float64], poly: Sequence[tuple[float, float]]
) -> npt.NDArray[np.bool_]:
    """Even-odd point-in-polygon test, vectorised over the points."""
    inside = np.zeros(np.broadcast(px, py).shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        if y1 == y2:
            continue
        straddles = (py >= min(y1, y2)) & (py < max(y1, y2))
        cross_x = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= straddles & (px < cross_x)
    return inside


def intruder_path(
    polygon: Sequence[tuple[float, float]], width: int, height: int, px_per_m: float
) -> PingPong | None:
    """A square path kept entirely inside ``polygon`` with one pixel to spare, or None if the
    polygon is too small to hold a 4-pixel square.

    Pixels count as inside only when all four of their corners are inside (and the result is
    eroded by one more pixel), so the square never touches the polygon's edge, whatever the
    polygon's shape. The square's side is about a tenth of the polygon's extent.
    """
    poly = [(float(px) * width, float(py) * height) for px, py in polygon]
    ys, xs = np.mgrid[0 : height + 1, 0 : width + 1].astype(np.float64)
    corners = inside_polygon(xs, ys, poly)
    full = corners[:-1, :-1] & corners[1:, :-1] & corners[:-1, 1:] & corners[1:, 1:]
    eroded = full.copy()
    eroded[1:, :] &= full[:-1, :]
    eroded[:-1, :] &= full[1:, :]
    eroded[:, 1:] &= full[:, :-1]
    eroded[:, :-1] &= full[:, 1:]
    if not eroded.any():
        return None
    rows = np.flatnonzero(eroded.any(axis=1))
    cols = np.flatnonzero(eroded.any(axis=0))
    extent = min(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    integral = np.zeros((height + 1, width + 1), dtype=np.int64)
    integral[1:, 1:] = eroded.cumsum(0).cumsum(1)
    size = max(4, _round_even(extent / 5))
    while size >= 4:
        s = size
        window = integral[s:, s:] - integral[:-s, s:] - integral[s:, :-s] + integral[:-s, :-s]
        valid = window == s * s  # valid[y, x]: the s×s square with top-left (x, y) fits
        valid[1::2, :] = False  # even coordinates keep the chroma samples inside too
        valid[:, 1::2] = False
        best: tuple[int, int, int] | None = None  # (run length, y, x start)
        for row_y in np.flatnonzero(valid.any(axis=1)):
            row = np.flatnonzero(valid[row_y])
            # Split the even positions of this row into runs of consecutive even columns.
            breaks = np.flatnonzero(np.diff(row) != 2) + 1
            for run in np.split(row, breaks):
                length = int(run[-1] - run[0])
                if best is None or length > best[0]:
                    best = (length, int(row_y), int(run[0]))
        if best is not None and best[0] >= s:
            length, y, x = best
            return PingPong(y, x, x + length, s, 1.2 * px_per_m)
        size -= 2 if size <= 16 else size // 4
    return None

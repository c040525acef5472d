"""The synthetic camera: a deterministic street scene rendered straight into I420.

The background (façade with windows, pavements, road with lane markings and a zebra crossing)
is rendered once per source with seeded noise textures; each frame is a copy of it with the
actors of :class:`edge.capture.scene.Scene` drawn as a few numpy slice fills, which keeps
1280×720 at 25 fps far below one core. The same seed and frame index give the same bytes, on
any machine: there is no floating-point accumulation across frames, positions are computed
from the index alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..frames import Frame, Plane, check_dimensions
from . import props as props_mod
from .base import FrameSource
from .scene import (
    CROSSING_X,
    FACADE_BOTTOM,
    FAR_PAVEMENT_BOTTOM,
    LANE_DIVIDER,
    ROAD_BOTTOM,
    WINDOW_TOPS,
    Crossing,
    Scene,
    SceneObject,
    Track,
    window_bay,
    windows,
)

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]
YUV = tuple[int, int, int]


def rgb_to_yuv(rgb: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """BT.601 limited-range conversion of an (..., 3) RGB array (0..255) to Y, U, V."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return np.stack([y, u, v], axis=-1)


def _yuv(rgb: RGB) -> YUV:
    y, u, v = rgb_to_yuv(np.array(rgb, dtype=np.float64))
    return round(float(y)), round(float(u)), round(float(v))


def rgb_to_i420(rgb: npt.NDArray[np.uint8]) -> tuple[Plane, Plane, Plane]:
    """Convert an even-sized (h, w, 3) RGB image to I420 planes (chroma averaged over 2×2)."""
    yuv = rgb_to_yuv(rgb.astype(np.float64))
    h, w = rgb.shape[:2]
    y = np.clip(np.rint(yuv[..., 0]), 0, 255).astype(np.uint8)
    sub = yuv[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    chroma = np.clip(np.rint(sub), 0, 255).astype(np.uint8)
    return y, chroma[..., 0].copy(), chroma[..., 1].copy()


@dataclass(frozen=True)
class Sprite:
    """An external RGB image moved across the scene (e.g. a photograph of a face).

    ``start`` is the top-left corner in pixels at scene time 0, ``velocity`` in pixels per
    second; with ``repeat_s`` the sprite starts again from ``start`` every ``repeat_s`` seconds
    (a new pass with a new ground-truth id). Odd image sizes are cropped by one pixel.
    """

    image_rgb: npt.NDArray[np.uint8]
    start: tuple[float, float] = (0.0, 0.0)
    velocity: tuple[float, float] = (0.0, 0.0)
    kind: str = "sprite"
    repeat_s: float | None = None


# Colours of the scene (RGB), chosen so every actor differs clearly from what it walks on.
_WALL = (196, 174, 142)
_MORTAR = (150, 138, 120)
_GLASS = (52, 62, 84)
_LIT = (226, 204, 120)
_FRAME = (228, 226, 218)
_DOOR = (92, 60, 40)
_PAVEMENT = (168, 168, 162)
_KERB = (205, 205, 200)
_ASPHALT = (66, 66, 72)
_PAINT = (236, 236, 230)
_SKIN = ((224, 172, 140), (170, 120, 90), (120, 80, 56))
_CLOTHES = (
    (200, 40, 40),
    (40, 80, 190),
    (30, 140, 60),
    (230, 180, 30),
    (120, 40, 140),
    (20, 20, 24),
)
_CARS = ((180, 20, 30), (20, 50, 150), (235, 235, 235), (15, 15, 18), (200, 160, 20), (40, 120, 80))
_INTRUDER = (255, 255, 0)


def _background(width: int, height: int, seed: int) -> npt.NDArray[np.uint8]:
    """The still part of the scene as an RGB image."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), dtype=np.float64)

    def rows(a: float, b: float) -> slice:
        return slice(round(a * height), round(b * height))

    facade, far, road, near = (
        rows(0, FACADE_BOTTOM),
        rows(FACADE_BOTTOM, FAR_PAVEMENT_BOTTOM),
        rows(FAR_PAVEMENT_BOTTOM, ROAD_BOTTOM),
        rows(ROAD_BOTTOM, 1.0),
    )
    img[facade] = _WALL
    img[far] = _PAVEMENT
    img[road] = _ASPHALT
    img[near] = _PAVEMENT
    # Brick courses with staggered joints.
    course = max(4, height // 60)
    brick = course * 3
    for i, y0 in enumerate(range(0, facade.stop, course)):
        img[y0 : y0 + 1, :, :] = _MORTAR
        offset = (brick // 2) * (i % 2)
        img[y0 : min(y0 + course, facade.stop), offset::brick, :] = _MORTAR
    # Two storeys of windows, some lit; doors on the ground floor above the zebra crossing.
    lit = rng.random((len(WINDOW_TOPS), width // window_bay(width) + 1)) < 0.3
    for window in windows(width, height):
        x0, y0, x1, y1 = window.box
        fx0, fy0, fx1, fy1 = window.outer
        img[fy0:fy1, fx0:fx1] = _FRAME
        img[y0:y1, x0:x1] = _LIT if lit[window.storey, window.column] else _GLASS
        img[(y0 + y1) // 2, x0:x1] = _FRAME
    door_x0, door_x1 = round(CROSSING_X[0] * width), round(CROSSING_X[1] * width)
    img[round(0.40 * height) : facade.stop, door_x0:door_x1] = _DOOR
    # Paving slabs.
    slab = max(8, width // 40)
    for part in (far, near):
        img[part, ::slab] = _MORTAR
        img[part.start : part.stop : slab // 2] = _MORTAR
    # Kerbs, dashed centre line, zebra crossing.
    img[far.stop - max(2, height // 120) : far.stop] = _KERB
    img[near.start : near.start + max(2, height // 120)] = _KERB
    dash = max(8, width // 24)
    centre = round(LANE_DIVIDER * height)
    for x0 in range(0, width, 2 * dash):
        img[centre - max(1, height // 240) : centre + max(1, height // 240), x0 : x0 + dash] = (
            _PAINT
        )
    stripe = max(2, (road.stop - road.start) // 11)
    for y0 in range(road.start + stripe // 2, road.stop - stripe, 2 * stripe):
        img[y0 : y0 + stripe, door_x0:door_x1] = _PAINT
    # Texture: smooth-ish seeded noise, stronger on asphalt.
    noise = rng.normal(0.0, 6.0, (height, width, 1))
    noise[road] *= 1.6
    img += noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _fill(planes: tuple[Plane, Plane, Plane], box: tuple[int, int, int, int], colour: YUV) -> None:
    """Fill a pixel rectangle (clipped) in all three planes; chroma covers every touched sample."""
    y_plane, u_plane, v_plane = planes
    h, w = y_plane.shape
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
    if x0 >= x1 or y0 >= y1:
        return
    y_plane[y0:y1, x0:x1] = colour[0]
    cs = (slice(y0 // 2, (y1 + 1) // 2), slice(x0 // 2, (x1 + 1) // 2))
    u_plane[cs] = colour[1]
    v_plane[cs] = colour[2]


class SyntheticSource(FrameSource):
    """Deterministic street scene; see :mod:`edge.capture.scene` for its ground truth.

    ``realtime=True`` paces frames to ``fps`` on the monotonic clock like a live camera (a
    reader that falls behind by more than a frame skips frames, which shows as a gap in
    ``index``); ``realtime=False`` returns frames as fast as they are asked for (tests).
    The frame counter survives :meth:`close`/:meth:`open`, like a camera that keeps running.
    """

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        fps: float = 25.0,
        *,
        seed: int = 1,
        pedestrians: int = 4,
        vehicles: int = 2,
        intruder_polygon: Sequence[tuple[float, float]] | None = None,
        sprites: Sequence[Sprite] = (),
        props: Sequence[props_mod.Prop] = (),
        realtime: bool = True,
    ) -> None:
        check_dimensions(width, height)
        super().__init__(width, height, fps)
        self.realtime = realtime
        self.props = list(props)
        self.seed = seed
        self.description = f"synthetic street scene (seed {seed}, {width}x{height}@{fps:g})"
        self._sprites: list[tuple[Plane, Plane, Plane]] = []
        specs = []
        for sprite in sprites:
            img = sprite.image_rgb
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError("sprite image must be an (h, w, 3) uint8 RGB array")
            img = img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2]
            if img.size == 0:
                raise ValueError("sprite image must be at least 2x2 pixels")
            self._sprites.append(rgb_to_i420(np.ascontiguousarray(img)))
            size = (img.shape[1], img.shape[0])
            specs.append((sprite.kind, size, sprite.start, sprite.velocity, sprite.repeat_s))
        self.scene = Scene(
            width,
            height,
            fps,
            seed=seed,
            pedestrians=pedestrians,
            vehicles=vehicles,
            intruder_polygon=intruder_polygon,
            sprite_specs=specs,
        )
        if intruder_polygon is not None and self.scene.intruder is None:
            log.warning("%s: the privacy mask is too small to hold the intruder", self.description)
        bg = _background(width, height, seed)
        y, u, v = rgb_to_i420(bg)
        self._background = Frame.from_planes(y, u, v, index=0, mono_ns=0, wall_ns=0).data
        self._sprite_count = len(sprites)
        self._next = 0
        self._t0_ns: int | None = None
        self._open = False

    # --- ground truth ------------------------------------------------------------------------

    def objects_at(self, index: int) -> list[SceneObject]:
        """Every object visible in frame ``index`` (pedestrians, vehicles, intruder, sprites)."""
        return self.scene.objects_at(index)

    def crossings(
        self, *, x: float | None = None, y: float | None = None, start: int = 0, stop: int
    ) -> list[Crossing]:
        """Objects crossing the vertical line ``x`` or horizontal line ``y`` (normalised)."""
        return self.scene.crossings(x=x, y=y, start=start, stop=stop)

    # --- rendering ---------------------------------------------------------------------------

    def render(self, index: int, into: Frame | None = None) -> Frame:
        """Frame ``index`` of the scene (timestamps zero); the same bytes for the same seed.

        Rendered into ``into`` (a pooled buffer) when given, else into a new buffer.
        """
        if into is None:
            frame = Frame(self._background.copy(), self.width, self.height, index, 0, 0)
        else:
            frame = into
            np.copyto(frame.data, self._background)
        planes = (frame.y, frame.u, frame.v)
        for track, obj, local in self.scene.placements(index):
            if track is None:
                _draw_intruder(planes, obj)
            elif track.kind == "pedestrian":
                _draw_pedestrian(planes, track, obj, local, self.scene.px_per_m)
            elif track.kind == "vehicle":
                _draw_vehicle(planes, track, obj)
            else:
                self._draw_sprite(planes, track, obj)
        t = index / self.fps
        for prop in self.props:
            for op in props_mod.ops(prop, t, index, self.width, self.height, self.seed):
                _draw_op(planes, op)
        return frame

    def _draw_sprite(
        self, planes: tuple[Plane, Plane, Plane], track: Track, obj: SceneObject
    ) -> None:
        sy, su, sv = self._sprites[track.number]
        h, w = sy.shape
        x = round(obj.centre[0] - w / 2)
        y = round(obj.centre[1] - h / 2)
        x0, y0, x1, y1 = obj.bbox
        planes[0][y0:y1, x0:x1] = sy[y0 - y : y1 - y, x0 - x : x1 - x]
        cx0, cy0, cx1, cy1 = x0 // 2, y0 // 2, x1 // 2, y1 // 2
        planes[1][cy0:cy1, cx0:cx1] = su[cy0 - y // 2 : cy1 - y // 2, cx0 - x // 2 : cx1 - x // 2]
        planes[2][cy0:cy1, cx0:cx1] = sv[cy0 - y // 2 : cy1 - y // 2, cx0 - x // 2 : cx1 - x // 2]

    # --- FrameSource -------------------------------------------------------------------------

    def open(self) -> None:
        self._open = True
        self._t0_ns = None

    def read(self) -> Frame | None:
        if not self._open:
            raise RuntimeError("read() before open()")
        index = self._next
        period_ns = round(1e9 / self.fps)
        now = time.monotonic_ns()
        if self._t0_ns is None:
            self._t0_ns = now - index * period_ns
        due = self._t0_ns + index * period_ns
        if self.realtime:
            if now - due > period_ns:  # the reader fell behind: a live camera would have moved on
                index = (now - self._t0_ns) // period_ns
                due = self._t0_ns + index * period_ns
            elif due > now:
                time.sleep((due - now) / 1e9)
        self._next = index + 1  # a frame the budget refuses is gone, as from a live camera
        frame = self.render(index, self.new_frame(index))
        # The capture time is the frame's slot on the scene's clock, which the recording's
        # timestamps follow; read faster than real time, the scene still runs at fps.
        frame.mono_ns = due
        frame.wall_ns = time.time_ns()
        return frame

    def close(self) -> None:
        self._open = False


def _draw_pedestrian(
    planes: tuple[Plane, Plane, Plane],
    track: Track,
    obj: SceneObject,
    local_s: float,
    px_per_m: float,
) -> None:
    w, h = track.size
    x = round(obj.centre[0] - w / 2)
    y = round(obj.centre[1] - h / 2)
    style = track.style
    skin = _yuv(_SKIN[style % len(_SKIN)])
    top = _yuv(_CLOTHES[(style >> 2) % len(_CLOTHES)])
    legs = _yuv(_CLOTHES[(style >> 5) % len(_CLOTHES)])
    if legs == top:
        legs = _yuv(_CLOTHES[(style >> 5) % len(_CLOTHES) - 1])
    head_h, torso_h = max(2, h * 18 // 100), h * 42 // 100
    head_w = max(2, w * 6 // 10)
    hx = x + (w - head_w) // 2
    _fill(planes, (hx, y, hx + head_w, y + head_h), skin)
    _fill(planes, (x, y + head_h, x + w, y + head_h + torso_h), top)
    # Legs swing with the distance walked (one stride about 0.7 m).
    stride = 0.7 * px_per_m
    speed = abs(track.velocity[0]) + abs(track.velocity[1])
    # Legs close and open (scissor) rather than shift, so they never leave the bounding box.
    swing = round(abs(np.sin(np.pi * local_s * speed / stride)) * w * 0.2)
    leg_w = max(1, w * 4 // 10)
    leg_top = y + head_h + torso_h
    _fill(planes, (x + swing, leg_top, x + swing + leg_w, y + h), legs)
    _fill(planes, (x + w - leg_w - swing, leg_top, x + w - swing, y + h), legs)


def _draw_vehicle(planes: tuple[Plane, Plane, Plane], track: Track, obj: SceneObject) -> None:
    w, h = track.size
    x = round(obj.centre[0] - w / 2)
    y = round(obj.centre[1] - h / 2)
    body = _yuv(_CARS[track.style % len(_CARS)])
    dark = _yuv((20, 20, 22))
    glass = _yuv((90, 110, 130))
    forward = track.velocity[0] >= 0
    cab0, cab1 = (w * 15 // 100, w * 65 // 100) if forward else (w * 35 // 100, w * 85 // 100)
    _fill(planes, (x + cab0, y, x + cab1, y + h * 45 // 100), body)
    _fill(planes, (x + cab0 + 4, y + 3, x + cab1 - 4, y + h * 40 // 100), glass)
    _fill(planes, (x, y + h * 40 // 100, x + w, y + h * 85 // 100), body)
    wheel = max(2, w * 14 // 100)
    for wx in (x + w * 12 // 100, x + w * 88 // 100 - wheel):
        _fill(planes, (wx, y + h * 72 // 100, wx + wheel, y + h), dark)


def _draw_op(planes: tuple[Plane, Plane, Plane], op: props_mod.Op) -> None:
    """A prop's rectangle, or its image where it is not black (black is transparent)."""
    if isinstance(op, props_mod.Rect):
        _fill(planes, op.box, _yuv(op.rgb))
        return
    if isinstance(op, props_mod.Blend):
        _blend(planes, op)
        return
    h, w = op.rgb.shape[:2]
    y_plane, u_plane, v_plane = planes
    x0, y0 = op.x // 2 * 2, op.y // 2 * 2
    x1, y1 = min(x0 + w, y_plane.shape[1]) // 2 * 2, min(y0 + h, y_plane.shape[0]) // 2 * 2
    if x1 <= x0 or y1 <= y0:
        return
    rgb = op.rgb[: y1 - y0, : x1 - x0]
    shown = rgb.any(axis=2)
    yuv = rgb_to_yuv(rgb.astype(np.float64))
    region = y_plane[y0:y1, x0:x1]
    region[shown] = np.clip(np.rint(yuv[..., 0][shown]), 0, 255).astype(np.uint8)
    blocks = shown.reshape((y1 - y0) // 2, 2, (x1 - x0) // 2, 2).any(axis=(1, 3))
    sub = yuv[..., 1:].reshape((y1 - y0) // 2, 2, (x1 - x0) // 2, 2, 2).mean(axis=(1, 3))
    for k, plane in ((0, u_plane), (1, v_plane)):
        cregion = plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
        cregion[blocks] = np.clip(np.rint(sub[..., k][blocks]), 0, 255).astype(np.uint8)


def _blend(planes: tuple[Plane, Plane, Plane], op: props_mod.Blend) -> None:
    """Lay ``op.rgb`` over the picture with the opacity ``op.alpha`` (per pixel)."""
    y_plane, u_plane, v_plane = planes
    h, w = op.alpha.shape
    x0, y0 = op.x, op.y
    x1, y1 = min(x0 + w, y_plane.shape[1]) // 2 * 2, min(y0 + h, y_plane.shape[0]) // 2 * 2
    if x1 <= x0 or y1 <= y0:
        return
    a = op.alpha[: y1 - y0, : x1 - x0]
    yc, uc, vc = _yuv(op.rgb)
    region = y_plane[y0:y1, x0:x1].astype(np.float32)
    y_plane[y0:y1, x0:x1] = np.clip(np.rint(region * (1 - a) + yc * a), 0, 255).astype(np.uint8)
    ca = a.reshape((y1 - y0) // 2, 2, (x1 - x0) // 2, 2).mean(axis=(1, 3))
    for plane, c in ((u_plane, uc), (v_plane, vc)):
        cregion = plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2].astype(np.float32)
        plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = np.clip(
            np.rint(cregion * (1 - ca) + c * ca), 0, 255
        ).astype(np.uint8)


def _draw_intruder(planes: tuple[Plane, Plane, Plane], obj: SceneObject) -> None:
    x0, y0, x1, y1 = obj.bbox
    _fill(planes, obj.bbox, _yuv((255, 255, 255)))
    inset = max(1, (x1 - x0) // 6) // 2 * 2 or 2
    _fill(planes, (x0 + inset, y0 + inset, x1 - inset, y1 - inset), _yuv(_INTRUDER))

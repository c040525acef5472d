"""Scripted props of the synthetic street for the decree's rules, and their decoys.

Each :class:`Prop` has a box (normalised) and a start time (scene seconds): the ground truth a
test compares events with. Events to find:

* ``flame``: a fire starts at ``start_s`` at the bottom of the box and grows to fill it over
  ``grow_s``; tongues of red, orange and yellow flicker independently, pixel block by block;
* ``left_bag``: a walker crosses the near pavement carrying a case, sets it down in the box at
  ``start_s`` and walks on out of the frame; the case stays;
* ``fall``: a walker comes in from the left, reaches the box at ``start_s``, falls and lies
  there (the box is the lying person);
* ``crowd``: ``count`` people stand close together in the box from ``start_s``, swaying;
* ``smoke``: a grey plume starts at ``start_s`` at the bottom of the box, rising and widening.

Decoys (the national evaluation's false alarms):

* ``headlights``: a pair of warm-white lights crossing the box every ``period_s``;
* ``sign``: a lit orange sign, steady, switched on at ``start_s``;
* ``blinker``: an orange light blinking (``period_s``, half on) from ``start_s``;
* ``grey_car``: a light grey van crossing the box every ``period_s`` (colourless, not smoke).

Drawing is returned as operations (rectangles of one colour, or small RGB images) in pixels,
computed from the frame index and the seed alone, so frames stay reproducible.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

PropKind = Literal[
    "flame", "smoke", "left_bag", "fall", "crowd", "headlights", "sign", "blinker", "grey_car"
]
RGB = tuple[int, int, int]
PixelBox = tuple[int, int, int, int]

WALK_M_S = 1.4
_SKIN = (200, 150, 120)
_COAT = (40, 80, 190)
_TROUSERS = (30, 30, 36)
_CASE = (150, 40, 30)


@dataclass(frozen=True, slots=True)
class Prop:
    kind: PropKind
    box: tuple[float, float, float, float]
    """(x0, y0, x1, y1), normalised: where the event happens (or the decoy shines)."""
    start_s: float = 0.0
    grow_s: float = 20.0
    period_s: float = 1.0
    count: int = 8


@dataclass(frozen=True, slots=True)
class Rect:
    box: PixelBox
    rgb: RGB


@dataclass(frozen=True, slots=True)
class Image:
    x: int
    y: int
    rgb: npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Blend:
    """A colour laid over the picture with a per-pixel opacity (smoke)."""

    x: int
    y: int
    rgb: RGB
    alpha: npt.NDArray[np.float32]


Op = Rect | Image | Blend


def _px(prop: Prop, width: int, height: int) -> PixelBox:
    x0, y0, x1, y1 = prop.box
    return (round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height))


def _person(x: int, feet: int, w: int, h: int, swing: int) -> list[Op]:
    """An upright walker (head, coat, two legs) whose feet touch ``feet``."""
    y = feet - h
    head_h, torso_h = max(2, h * 18 // 100), h * 42 // 100
    head_w = max(2, w * 6 // 10)
    hx = x + (w - head_w) // 2
    leg_w = max(1, w * 4 // 10)
    leg_top = y + head_h + torso_h
    return [
        Rect((hx, y, hx + head_w, y + head_h), _SKIN),
        Rect((x, y + head_h, x + w, leg_top), _COAT),
        Rect((x + swing, leg_top, x + swing + leg_w, feet), _TROUSERS),
        Rect((x + w - leg_w - swing, leg_top, x + w - swing, feet), _TROUSERS),
    ]


def _lying(box: PixelBox) -> list[Op]:
    """A person on the ground: head, coat and legs laid out left to right."""
    x0, y0, x1, y1 = box
    length = x1 - x0
    head = max(2, length * 18 // 100)
    torso = length * 42 // 100
    return [
        Rect((x0, y0, x0 + head, y1), _SKIN),
        Rect((x0 + head, y0, x0 + head + torso, y1), _COAT),
        Rect((x0 + head + torso, y0, x1, y1), _TROUSERS),
    ]


def _walker_x(start_x: float, t: float, t_at: float, px_per_m: float) -> float:
    """x of a walker going right who is at ``start_x`` at time ``t_at``."""
    return start_x + (t - t_at) * WALK_M_S * px_per_m


def ops(prop: Prop, t: float, index: int, width: int, height: int, seed: int) -> list[Op]:
    """What to draw for ``prop`` at scene time ``t`` (frame ``index``)."""
    px_per_m = width / 20.0
    x0, y0, x1, y1 = _px(prop, width, height)
    person_h = round(0.17 * height) // 2 * 2
    person_w = max(4, person_h // 4 // 2 * 2)
    swing = round(abs(math.sin(math.pi * t * WALK_M_S / 0.7)) * person_w * 0.2)
    out: list[Op] = []
    if prop.kind == "left_bag":
        # The walker's right edge passes the case's left edge at start_s.
        wx = _walker_x(x0 - person_w, t, prop.start_s, px_per_m)
        if t >= prop.start_s:
            out.append(Rect((x0, y0, x1, y1), _CASE))
        if wx < width:
            out += _person(round(wx), y1, person_w, person_h, swing)
            if t < prop.start_s:
                cw = x1 - x0
                out.append(Rect((round(wx) + person_w, y0, round(wx) + person_w + cw, y1), _CASE))
    elif prop.kind == "fall":
        if t < prop.start_s:
            wx = _walker_x(x0, t, prop.start_s, px_per_m)
            out += _person(round(wx), y1, person_w, person_h, swing)
        else:
            out += _lying((x0, y0, x1, y1))
    elif prop.kind == "crowd" and t >= prop.start_s:
        rng = random.Random(f"crowd-{seed}-{prop.box}")  # noqa: S311 - a scene
        for k in range(prop.count):
            cx = rng.uniform(x0, max(x0, x1 - person_w))
            feet = rng.uniform(y0 + person_h, y1)
            sway = 0.15 * px_per_m * math.sin(0.8 * t + k)
            out += _person(round(cx + sway), round(feet), person_w, person_h, 0)
    elif prop.kind == "flame" and t >= prop.start_s:
        out.append(_flame(prop, t, index, (x0, y0, x1, y1), seed))
    elif prop.kind == "smoke" and t >= prop.start_s:
        out.append(_smoke(prop, t, (x0, y0, x1, y1), seed))
    elif prop.kind == "grey_car":
        # A light grey van crossing the box every period_s: colourless, bright, not smoke.
        period = max(prop.period_s, 1.0)
        if t >= prop.start_s:
            phase = ((t - prop.start_s) % period) / period
            vw = round(4.5 * px_per_m)
            vx = x0 - vw + round(phase * (x1 - x0 + vw))
            out.append(Rect((vx, y0, vx + vw, y1), (200, 200, 196)))
    elif prop.kind == "headlights":
        period = max(prop.period_s, 1.0)
        phase = ((t - prop.start_s) % period) / period
        if t >= prop.start_s:
            span = x1 - x0
            lx = x0 + round(phase * (span + 3 * (y1 - y0))) - 3 * (y1 - y0)
            d = y1 - y0
            for lamp in (lx, lx + 2 * d):
                out.append(Rect((lamp, y0, lamp + d, y1), (255, 236, 190)))
    elif prop.kind == "sign" and t >= prop.start_s:
        out.append(Rect((x0, y0, x1, y1), (255, 120, 20)))
        out.append(Rect((x0 + 2, y0 + 2, x1 - 2, y0 + 4), (255, 200, 60)))
    elif (
        prop.kind == "blinker"
        and t >= prop.start_s
        and ((t - prop.start_s) % prop.period_s) < prop.period_s / 2
    ):
        out.append(Rect((x0, y0, x1, y1), (255, 150, 10)))
    return out


def _flame(prop: Prop, t: float, index: int, box: PixelBox, seed: int) -> Image:
    """A growing fire: tongues of independent height, colours from yellow at the base to red at
    the tips, every 2×2 block flickering on its own."""
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) // 2 * 2, (y1 - y0) // 2 * 2
    grow = min(1.0, 0.3 + 0.7 * (t - prop.start_s) / max(prop.grow_s, 1e-3))
    gw = max(2, round(w * grow) // 2 * 2)
    rng = np.random.default_rng([seed, index, 7])
    img = np.zeros((h, gw, 3), dtype=np.float32)
    cols = np.arange(gw // 2)
    base = h * grow
    # Tongue heights: smooth across columns, new every frame (flames never hold still).
    tongues = base * (0.45 + 0.55 * rng.random(len(cols)))
    tongues = np.convolve(tongues, np.ones(3) / 3, mode="same")
    rows = np.arange(h // 2)[:, None]
    height_from_bottom = (h // 2 - rows) * 2.0
    frac = height_from_bottom / np.maximum(tongues[None, :], 1.0)
    inside = frac <= 1.0
    flick = 0.75 + 0.5 * rng.random((h // 2, gw // 2))
    red = np.full_like(frac, 255.0)
    green = np.clip(210 - 170 * frac, 40, 210) * flick
    blue = np.clip(60 - 60 * frac, 0, 60)
    block = np.stack([red * np.minimum(flick, 1.0), green, blue], axis=-1)
    block[~inside] = 0.0
    img = np.repeat(np.repeat(block, 2, axis=0), 2, axis=1)
    alpha = np.repeat(np.repeat(inside, 2, axis=0), 2, axis=1)
    out = np.clip(img, 0, 255).astype(np.uint8)
    out[~alpha] = 0
    cx = x0 + (w - gw) // 2
    return Image(cx // 2 * 2, y0, out)


def _smoke(prop: Prop, t: float, box: PixelBox, seed: int) -> Blend:
    """A plume: puffs leave the bottom centre every 0.25 s, rise, widen and drift; together
    they make a grey haze, thickest low down, that grows to fill the box over ``grow_s``."""
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) // 2 * 2, (y1 - y0) // 2 * 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    alpha = np.zeros((h, w), dtype=np.float32)
    age_max = max(prop.grow_s, 1.0)
    elapsed = t - prop.start_s
    rng = random.Random(f"smoke-{seed}-{prop.box}")  # noqa: S311 - a scene
    drifts = [rng.uniform(-0.15, 0.15) for _ in range(400)]
    k = 0
    while k * 0.25 <= elapsed and k < 400:
        age = elapsed - k * 0.25
        if age <= age_max:
            rise = min(1.0, age / age_max)
            cy = h * (1.0 - 0.9 * rise)
            cx = w / 2 + drifts[k] * w * rise + 0.05 * w * math.sin(1.3 * t + k)
            r = max(2.0, (0.05 + 0.15 * rise) * w)
            alpha += 0.1 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        k += 1
    return Blend(x0 // 2 * 2, y0 // 2 * 2, (190, 190, 186), np.clip(alpha, 0.0, 0.6))


def events(props: list[Prop]) -> list[tuple[PropKind, float]]:
    """Ground truth: each event prop's kind and start time (decoys have none)."""
    kinds = ("flame", "smoke", "left_bag", "fall", "crowd")
    return [(p.kind, p.start_s) for p in props if p.kind in kinds]

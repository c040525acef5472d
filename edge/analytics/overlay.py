"""What the rules look at, drawn on a (masked) preview picture for installers: counting lines
with the side that counts as "forward", every rule's zone with its kind and name, and the
ground grid of the calibration (one line a metre). Pure drawing on a Pillow image; the picture
itself comes masked from the privacy preview (:mod:`edge.privacy.preview`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..config import CameraAnalyticsConfig
from .ground import homography

#: Colour of counting lines and their "forward" arrows (cyan: not a mask outline, not a scene).
LINE_RGB = (0, 255, 255)
#: Colour of the ground grid.
GRID_RGB = (255, 255, 0)
#: Zone colours by rule kind.
ZONE_RGB: dict[str, tuple[int, int, int]] = {
    "gathering": (255, 160, 0),
    "crowd": (255, 200, 0),
    "wrong-way": (0, 160, 255),
    "parking": (0, 90, 255),
    "intrusion": (255, 0, 0),
    "abandoned": (255, 120, 200),
    "fallen": (170, 80, 255),
    "density": (0, 220, 90),
    "fire": (255, 80, 0),
}

Pt = tuple[float, float]


def forward_of(a: Pt, b: Pt) -> Pt:
    """Unit vector of "forward" for a line drawn a→b: a quarter turn clockwise on screen."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    n = math.hypot(dx, dy) or 1.0
    return (-dy / n, dx / n)


def _font(height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=max(11, height // 45))
    except (OSError, TypeError):  # Pillow built without FreeType: the bitmap font
        return ImageFont.load_default()


def _label(
    draw: ImageDraw.ImageDraw, at: Pt, text: str, rgb: tuple[int, int, int], font: object
) -> None:
    box = draw.textbbox(at, text, font=font)  # type: ignore[arg-type]
    draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
    draw.text(at, text, fill=rgb, font=font)  # type: ignore[arg-type]


def draw_rules(image: Image.Image, cam: CameraAnalyticsConfig, *, grid: bool = True) -> None:
    """Draw ``cam``'s lines, zones and (with ``grid``) ground grid on ``image`` in place."""
    w, h = image.size
    draw = ImageDraw.Draw(image)
    font = _font(h)
    width = max(2, w // 480)

    def px(p: Sequence[float]) -> Pt:
        return (float(p[0]) * w, float(p[1]) * h)

    if grid and cam.ground is not None:
        draw_ground_grid(draw, cam.ground.image, cam.ground.world, w, h)
    zones: list[tuple[str, str, list[tuple[float, float]]]] = [
        *(("gathering", r.name, r.zone) for r in cam.gatherings),
        *(("crowd", r.name, r.zone) for r in cam.crowd_movements),
        *(("wrong-way", r.name, r.zone) for r in cam.wrong_ways),
        *(("parking", r.name, r.zone) for r in cam.parkings),
        *(("intrusion", r.name, r.zone) for r in cam.intrusions),
        *(("abandoned", r.name, r.zone) for r in cam.abandoned_objects),
        *(("fallen", r.name, r.zone) for r in cam.fallen_persons),
        *(("density", r.name, r.zone) for r in cam.densities),
        *(("fire", r.name, r.zone) for r in cam.fires),
    ]
    for k, (kind, name, zone) in enumerate(zones):
        rgb = ZONE_RGB[kind]
        pts = [px(p) for p in zone]
        draw.line([*pts, pts[0]], fill=rgb, width=width)
        # Labels of zones that share a corner (the default whole frame) step down.
        x = min(max(pts[0][0] + 3, 0.0), w - 60.0)
        y = min(max(pts[0][1] + 3 + k * (h // 30), 0.0), h - 14.0)
        _label(draw, (x, y), f"{kind}: {name}", rgb, font)
    for rule in cam.wrong_ways:
        cx = sum(p[0] for p in rule.zone) / len(rule.zone)
        cy = sum(p[1] for p in rule.zone) / len(rule.zone)
        d = math.hypot(*rule.direction) or 1.0
        tip = (cx + 0.08 * rule.direction[0] / d, cy + 0.08 * rule.direction[1] / d)
        _arrow(draw, px((cx, cy)), px(tip), ZONE_RGB["wrong-way"], width)
    for line in cam.lines:
        a, b = px(line.points[0]), px(line.points[1])
        draw.line([a, b], fill=LINE_RGB, width=width + 1)
        fx, fy = forward_of(line.points[0], line.points[1])
        # The hysteresis band: a track counts once it has gone from beyond one edge to beyond
        # the other.
        for s in (-1, 1):
            off = (s * line.hysteresis * fx, s * line.hysteresis * fy)
            p0 = px((line.points[0][0] + off[0], line.points[0][1] + off[1]))
            p1 = px((line.points[1][0] + off[0], line.points[1][1] + off[1]))
            draw.line([p0, p1], fill=LINE_RGB, width=1)
        # The arrow is drawn in pixels: "forward" on screen whatever the frame's proportions.
        pfx, pfy = forward_of(a, b)
        mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
        tip = (mid[0] + 0.08 * h * pfx, mid[1] + 0.08 * h * pfy)
        _arrow(draw, mid, tip, LINE_RGB, width + 1)
        _label(draw, (tip[0] + 4, tip[1] - 6), f"{line.name}: forward", LINE_RGB, font)


def _arrow(draw: ImageDraw.ImageDraw, a: Pt, b: Pt, rgb: tuple[int, int, int], width: int) -> None:
    draw.line([a, b], fill=rgb, width=width)
    ang = math.atan2(b[1] - a[1], b[0] - a[0])
    size = max(6.0, math.hypot(b[0] - a[0], b[1] - a[1]) / 3)
    left = (b[0] - size * math.cos(ang - 0.5), b[1] - size * math.sin(ang - 0.5))
    right = (b[0] - size * math.cos(ang + 0.5), b[1] - size * math.sin(ang + 0.5))
    draw.polygon([b, left, right], fill=rgb)


def draw_ground_grid(
    draw: ImageDraw.ImageDraw,
    image_pts: Sequence[Sequence[float]],
    world_pts: Sequence[Sequence[float]],
    w: int,
    h: int,
    *,
    margin_m: float = 5.0,
) -> int:
    """One line a metre over the calibrated ground (and ``margin_m`` around it), only where
    the plane is in front of the camera. Returns the segments drawn."""
    hm = homography(image_pts, world_pts)
    inv = np.linalg.inv(hm)
    # The homogeneous scale has one sign on the ground in front of the camera: the sign it has
    # at the calibration points; past the horizon it flips.
    cx, cy = sum(xs := [p[0] for p in world_pts]) / 4, sum(p[1] for p in world_pts) / 4
    side = float(np.sign((inv @ np.array([cx, cy, 1.0]))[2])) or 1.0
    ys = [p[1] for p in world_pts]
    x0, x1 = math.floor(min(xs) - margin_m), math.ceil(max(xs) + margin_m)
    y0, y1 = math.floor(min(ys) - margin_m), math.ceil(max(ys) + margin_m)
    drawn = 0
    lines = [((x, y0), (x, y1)) for x in range(x0, x1 + 1)]
    lines += [((x0, y), (x1, y)) for y in range(y0, y1 + 1)]
    for (ax, ay), (bx, by) in lines:
        pts: list[Pt] = []
        for s in np.linspace(0.0, 1.0, 40):
            gx, gy = ax + (bx - ax) * s, ay + (by - ay) * s
            u, v, q = inv @ np.array([gx, gy, 1.0])
            # Behind the camera or beyond the horizon: the line stops there.
            if q * side <= 1e-9 or not (-0.5 <= u / q <= 1.5 and -0.5 <= v / q <= 1.5):
                if len(pts) >= 2:
                    draw.line(pts, fill=GRID_RGB, width=1)
                    drawn += 1
                pts = []
                continue
            pts.append((u / q * w, v / q * h))
        if len(pts) >= 2:
            draw.line(pts, fill=GRID_RGB, width=1)
            drawn += 1
    return drawn

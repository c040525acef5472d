"""Ground-plane calibration: a homography from normalised image points to metres (pure).

Four points on the ground whose positions are known in metres (the corners of a zebra
crossing, parking bays, kerb stones) give the plane's homography; with it a zone's area on the
ground and a track's position in metres follow, whatever the perspective. Used by the density
rule and by ``edgectl analytics calibrate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]


def homography(image: Sequence[Sequence[float]], world: Sequence[Sequence[float]]) -> Matrix:
    """The 3×3 matrix mapping image points to ground points (direct linear transform with
    h33 = 1); ValueError when the points are degenerate (three on a line, repeated)."""
    if len(image) != 4 or len(world) != 4:
        raise ValueError("a ground calibration takes exactly four points")
    for pts, what in ((image, "image"), (world, "ground")):
        for i in range(4):
            others = [pts[j] for j in range(4) if j != i]
            (ax, ay), (bx, by), (cx, cy) = others
            if abs((bx - ax) * (cy - ay) - (by - ay) * (cx - ax)) < 1e-9:
                raise ValueError(f"three of the four {what} points are on one line (or repeated)")
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(image, world, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    try:
        h = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64))
    except np.linalg.LinAlgError:
        raise ValueError("the four points do not define a ground plane") from None
    m = np.append(h, 1.0).reshape(3, 3)
    # Scaled so that the ground side of the horizon has w > 0 (where the points were taken).
    cx, cy = (sum(p[i] for p in image) / 4 for i in (0, 1))
    w = float(m[2] @ np.array([cx, cy, 1.0]))
    if abs(w) < 1e-12:
        raise ValueError("the four points do not define a ground plane")
    return m if w > 0 else -m


def to_ground(h: Matrix, point: Sequence[float]) -> tuple[float, float]:
    """Metres on the ground of a normalised image point (ValueError beyond the horizon)."""
    x, y, w = h @ np.array([point[0], point[1], 1.0])
    if w <= 1e-12:
        raise ValueError("the point lies at or beyond the horizon of the ground plane")
    return float(x / w), float(y / w)


def area_m2(h: Matrix, polygon: Sequence[Sequence[float]]) -> float:
    """Area on the ground of an image polygon (all of it must be below the horizon)."""
    pts = [to_ground(h, p) for p in polygon]
    s = 0.0
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1], strict=True):
        s += x1 * y2 - x2 * y1
    return abs(s) / 2.0


def to_image(h: Matrix, point: Sequence[float]) -> tuple[float, float]:
    """Normalised image point of a ground point (metres): for drawing the ground grid."""
    x, y, w = np.linalg.inv(h) @ np.array([point[0], point[1], 1.0])
    return float(x / w), float(y / w)

"""Fire starts (decree 2023-828: "départs de feux"), from the pixels of the masked frame.

The national evaluation (January 2025) found lit signs taken for fires; headlights and blinking
lights are the other classic false alarms. A region counts as fire-like only when all of these
hold over a sliding window (``WINDOW_S``):

* **colour**: flame colours (red-orange-yellow: strong red chroma, little blue, bright) in a
  cell for a good part of the window; white and bluish lights fail here;
* **flicker**: the cell's brightness varies from frame to frame (a lit sign is steady);
* **incoherence**: the cells flicker *independently* of each other, as flames do; a blinking
  light switches all its cells at once (their brightness series are correlated);
* **in place**: the region does not travel as a whole (headlights pass, a fire stays).

Smoke is the other sign (:mod:`edge.analytics.smoke`): a connected region of at least
``MIN_SMOKE_CELLS`` cells veiled by a haze that stays and billows. Either condition must hold
``min_seconds`` (the dwell) to raise one alert, whose ``cause`` says which (``flame`` or
``smoke``); the alert reports the region's growth since the condition began. Flames are
judged on the I420 planes at chroma resolution, in cells of 2×2 chroma samples (4×4 pixels).
Pure: numpy in, alerts out, no I/O.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from ..config import FireRuleConfig
from .geometry import point_in_polygon
from .rules import Alert, Cooldown
from .schedule import Schedule
from .smoke import SmokeDetector

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

CELL = 2
"""Cell side in chroma samples."""
WINDOW_S = 2.0
"""Seconds of frames judged together."""


def flame_colour(y: U8, u: U8, v: U8) -> npt.NDArray[np.bool_]:
    """Flame-coloured chroma samples (BT.601): red chroma well above neutral, blue chroma
    below it, bright. Headlights (white, warm white) and blue lights fail the chroma tests."""
    h, w = u.shape
    luma = y[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))
    cr = v.astype(np.int16) - 128
    cb = u.astype(np.int16) - 128
    mask: npt.NDArray[np.bool_] = (cr >= 22) & (cb <= -8) & (cr - cb >= 40) & (luma >= 90)
    return mask


class FireRule:
    """One zone watched for fire starts; not thread-safe (the analytics process owns it).

    Sensitivity scales the flicker a cell needs (luma standard deviation 10 at 0, 6 at 0.5,
    2 at 1) and the correlation above which cells count as one blinking light (0.6 at 0, 0.75
    at 0.5, 0.9 at 1).
    """

    MIN_CELLS = 4
    MAX_DRIFT = 0.02
    """Share of the frame height the region's colour may move between the two halves of the
    window: a flame's tongues dance in place, a walker or a slow car goes somewhere."""
    MIN_SMOKE_CELLS = 4
    """Smoky cells (8×8 pixels) of one connected region (:mod:`edge.analytics.smoke`)."""
    COLOUR_SHARE = 0.7
    """Share of the window's frames a cell must be flame-coloured in: what passes (headlights,
    a red car, a walker in an orange coat) or blinks (half the time off) is not."""
    FLICKERING_SHARE = 0.4
    """Share of the steadily coloured cells that must flicker: a fire flickers all over, a lit
    sign not at all, someone in an orange coat standing still only at the edges."""

    def __init__(self, cfg: FireRuleConfig, timezone: str = "Europe/Paris") -> None:
        self.cfg = cfg
        self.schedule = Schedule(cfg.schedule, timezone)
        s = cfg.sensitivity
        self.min_flicker = 10.0 - 8.0 * s
        self.max_coherence = 0.6 + 0.3 * s
        self._frames: deque[tuple[float, F32, F32]] = deque()
        self._zone: npt.NDArray[np.bool_] | None = None
        self._since: float | None = None
        self._first_cells = 0
        self._cooldown = Cooldown(cfg.cooldown_seconds)
        self.smoke = SmokeDetector(s)
        self._smoke_zone: npt.NDArray[np.bool_] | None = None
        self._cause = "flame"
        self.last: dict[str, float] = {}
        """Measures of the last frame (for tests and the evaluation tools)."""

    def _zone_cells(self, gh: int, gw: int) -> npt.NDArray[np.bool_]:
        if self._zone is None or self._zone.shape != (gh, gw):
            zone = np.zeros((gh, gw), dtype=bool)
            for gy in range(gh):
                for gx in range(gw):
                    zone[gy, gx] = point_in_polygon(
                        ((gx + 0.5) / gw, (gy + 0.5) / gh), self.cfg.zone
                    )
            self._zone = zone
        return self._zone

    def update(self, y: U8, u: U8, v: U8, t: float, wall_s: float) -> list[Alert]:
        h, w = u.shape
        gh, gw = h // CELL, w // CELL
        if gh == 0 or gw == 0:
            return []
        colour = flame_colour(y, u, v)[: gh * CELL, : gw * CELL]
        share = colour.reshape(gh, CELL, gw, CELL).mean(axis=(1, 3)).astype(np.float32)
        luma = (
            y[: gh * CELL * 2, : gw * CELL * 2]
            .reshape(gh, CELL * 2, gw, CELL * 2)
            .mean(axis=(1, 3))
            .astype(np.float32)
        )
        self._frames.append((t, share, luma))
        while self._frames and self._frames[0][0] < t - WINDOW_S:
            self._frames.popleft()
        fire = self._fire_like(gh, gw, t)
        smoke = self._smoke_like(y, u, v, t)
        if not (fire or smoke) or not self.schedule.armed(wall_s):
            self._since = None
            return []
        if self._since is None:
            # The cause is what started the condition, even if the other sign joins it later.
            self._cause = "flame" if fire else "smoke"
        cells = int(self.last["cells"] if self._cause == "flame" else self.last["smoke_cells"])
        if self._since is None:
            self._since, self._first_cells = t, cells
        held = t - self._since
        if held >= self.cfg.min_seconds and self._cooldown.ready(None, t):
            self._cooldown.fire(None, t)
            details: dict[str, float | str] = {
                "cause": self._cause,
                "seconds": round(held, 1),
                "growth": round(cells / max(self._first_cells, 1), 2),
            }
            if self._cause == "flame":
                details |= {
                    "area": round(self.last["area"], 4),
                    "flicker": round(self.last["flicker"], 1),
                    "coherence": round(self.last["coherence"], 2),
                }
            else:
                details["area"] = round(self.last["smoke_area"], 4)
            return [Alert("fire", self.cfg.name, t, details)]
        return []

    def _smoke_like(self, y: U8, u: U8, v: U8, t: float) -> bool:
        """The largest smoky region in the zone has ``MIN_SMOKE_CELLS`` cells."""
        cells = self.smoke.update(y, u, v, t)
        self.last["smoke_cells"], self.last["smoke_area"] = 0.0, 0.0
        if cells is None:
            return False
        gh, gw = cells.shape
        if self._smoke_zone is None or self._smoke_zone.shape != (gh, gw):
            self._smoke_zone = np.array(
                [
                    [point_in_polygon(((gx + 0.5) / gw, (gy + 0.5) / gh), self.cfg.zone)
                     for gx in range(gw)]
                    for gy in range(gh)
                ],
                dtype=bool,
            )  # fmt: skip
        n = max((len(r) for r in _regions(cells & self._smoke_zone)), default=0)
        self.last["smoke_cells"], self.last["smoke_area"] = float(n), n / float(gh * gw)
        return n >= self.MIN_SMOKE_CELLS

    def _travels(self, shares: F32, region: npt.NDArray[np.intp], gh: int) -> bool:
        """The region's colour moved across the window as a whole (someone in a red coat
        walking slowly over a zebra crossing), as flames in place do not."""
        half = len(shares) // 2
        early = _centre(shares[:half].mean(axis=0), region)
        late = _centre(shares[half:].mean(axis=0), region)
        if early is None or late is None:
            return False
        drift = float(np.hypot(late[0] - early[0], late[1] - early[1])) / gh
        return drift > self.MAX_DRIFT

    def _fire_like(self, gh: int, gw: int, t: float) -> bool:
        self.last = {"cells": 0.0, "area": 0.0, "flicker": 0.0, "coherence": 0.0}
        if len(self._frames) < 4:
            return False
        shares = np.stack([f[1] for f in self._frames])
        lumas = np.stack([f[2] for f in self._frames])
        coloured = (shares > 0.2).mean(axis=0) >= self.COLOUR_SHARE
        candidates = coloured & self._zone_cells(gh, gw)
        flicker = lumas.std(axis=0)
        flickering = candidates & (flicker >= self.min_flicker)
        # Judged region by region: a lit sign beside a fire must not dilute the fire's flicker.
        best: dict[str, float] | None = None
        for region in _regions(candidates):
            rows, cols = region[:, 0], region[:, 1]
            lit = flickering[rows, cols]
            n = int(lit.sum())
            if n < self.MIN_CELLS or n < self.FLICKERING_SHARE * len(region):
                continue
            coherence = _coherence(lumas[:, rows[lit], cols[lit]])
            if coherence >= self.max_coherence or self._travels(shares, region, gh):
                continue
            measures = {
                "cells": float(n),
                "area": n / float(gh * gw),
                "flicker": float(flicker[rows[lit], cols[lit]].mean()),
                "coherence": coherence,
            }
            if best is None or measures["cells"] > best["cells"]:
                best = measures
        if best is None:
            return False
        self.last = best
        return True


def _centre(weights: F32, region: npt.NDArray[np.intp]) -> tuple[float, float] | None:
    w = weights[region[:, 0], region[:, 1]]
    total = float(w.sum())
    if total <= 0:
        return None
    return (
        float((w * region[:, 0]).sum()) / total,
        float((w * region[:, 1]).sum()) / total,
    )


def _regions(cells: npt.NDArray[np.bool_]) -> list[npt.NDArray[np.intp]]:
    """4-connected groups of set cells, each as an (n, 2) array of (row, column)."""
    seen = np.zeros_like(cells)
    h, w = cells.shape
    out = []
    for sy, sx in zip(*np.nonzero(cells), strict=True):
        if seen[sy, sx]:
            continue
        seen[sy, sx] = True
        todo = [(int(sy), int(sx))]
        group = []
        while todo:
            cy, cx = todo.pop()
            group.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < h and 0 <= nx < w and cells[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    todo.append((ny, nx))
        out.append(np.array(group, dtype=np.intp))
    return out


def _coherence(series: F32) -> float:
    """Mean correlation of each cell's brightness series (columns) with the cells' mean series:
    near 1 for lights that switch together, lower for flames that flicker independently."""
    centred = series - series.mean(axis=0)
    norms = np.linalg.norm(centred, axis=0)
    keep = norms > 1e-3
    if keep.sum() < 2:
        return 1.0
    centred = centred[:, keep] / norms[keep]
    mean = centred.mean(axis=1)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-6:
        return 0.0
    return float((centred.T @ (mean / norm)).mean())

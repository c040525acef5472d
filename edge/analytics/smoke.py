"""Smoke, the other sign of a fire start: a haze that veils the scene, stays and moves.

Smoke laid over a street is *additive*: it pulls each cell (8×8 pixels) towards its own grey,
so the cell loses texture relative to its brightness (the coefficient of variation, standard
deviation over mean, drops), gains no colour, and keeps changing slowly as the plume billows.
A cell is smoky when, against a background learned like the abandoned-object detector's
(temporal median of the first frames, then slow updates where nothing changed):

* its brightness changed (beyond the frame's global change: a cloud, dusk, auto exposure);
* its coefficient of variation fell below ``texture_ratio`` of the background's: a shadow
  darkens a cell *and* its texture in proportion (the ratio stays), a veil does not;
* it is not more colourful than the background (a red car, an orange sign are not smoke);

for most of a window of ``WINDOW_S`` (what passes, a grey van, headlights, is not), while its
brightness still varies (what stays still, a parked van, a lit sign, a case, is not). Pure:
numpy in, measures out; :class:`edge.analytics.fire.FireRule` turns them into alerts.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

CELL = 8
WINDOW_S = 4.0
WARMUP_FRAMES = 10
PERSISTENT = 0.6
"""Share of the window's frames a cell must be smoky in."""
MIN_VARIATION = 1.0
"""Luma standard deviation over the window below which a cell is still (not smoke)."""
LEARN_RATE = 0.01
ABSORB_RATE = 0.02
"""Per frame, for a change that stopped moving: taken in within a few seconds."""


def _cells(y: U8, u: U8, v: U8, gh: int, gw: int) -> tuple[F32, F32, F32]:
    """Cell mean and standard deviation of luma, and mean chroma saturation."""
    block = y[: gh * CELL, : gw * CELL].reshape(gh, CELL, gw, CELL).astype(np.float32)
    mean = block.mean(axis=(1, 3))
    std = block.std(axis=(1, 3))
    c = CELL // 2
    sat = np.abs(u[: gh * c, : gw * c].astype(np.float32) - 128) + np.abs(
        v[: gh * c, : gw * c].astype(np.float32) - 128
    )
    return mean, std, sat.reshape(gh, c, gw, c).mean(axis=(1, 3))


class SmokeDetector:
    """Smoky cells of one camera; not thread-safe. Sensitivity: the change a cell needs (12
    luma levels at 0, 8 at 0.5, 4 at 1) and the texture ratio (0.55 at 0, 0.65 at 0.5, 0.75
    at 1)."""

    def __init__(self, sensitivity: float = 0.5) -> None:
        self.min_change = 12.0 - 8.0 * sensitivity
        self.texture_ratio = 0.55 + 0.2 * sensitivity
        self._warmup: list[tuple[F32, F32, F32]] = []
        self._bg: tuple[F32, F32, F32] | None = None
        self._frames: deque[tuple[float, npt.NDArray[np.bool_], F32]] = deque()

    def update(self, y: U8, u: U8, v: U8, t: float) -> npt.NDArray[np.bool_] | None:
        """Cells smoky over the window (None while learning the background)."""
        h, w = y.shape
        gh, gw = h // CELL, w // CELL
        if gh == 0 or gw == 0:
            return None
        mean, std, sat = _cells(y, u, v, gh, gw)
        if self._bg is not None and self._bg[0].shape != mean.shape:
            self._bg, self._warmup = None, []  # the analysed size changed: learn again
        if self._bg is None:
            self._warmup.append((mean, std, sat))
            if len(self._warmup) >= WARMUP_FRAMES:
                stack = [np.stack([f[k] for f in self._warmup]) for k in range(3)]
                # Brightness and colour: the median (passers-by are in few frames). Texture:
                # a low percentile, the street's own: passers-by only ever add texture, and
                # a background made more textured by them would make the bare street look veiled.
                self._bg = (
                    np.median(stack[0], axis=0).astype(np.float32),
                    np.percentile(stack[1], 20, axis=0).astype(np.float32),
                    np.median(stack[2], axis=0).astype(np.float32),
                )
                self._warmup = []
            return None
        assert self._bg is not None
        bg_mean, bg_std, bg_sat = self._bg
        change = mean - bg_mean
        change -= float(np.median(change))  # the whole frame's change is light, not smoke
        cv = std / np.maximum(mean, 1.0)
        bg_cv = bg_std / np.maximum(bg_mean, 1.0)
        smoky = (
            (np.abs(change) > self.min_change)
            & (cv < self.texture_ratio * bg_cv)
            & (bg_cv > 0.01)  # a flat cell has no texture to lose
            & (sat <= bg_sat + 4.0)
        )
        self._frames.append((t, smoky, mean))
        while self._frames and self._frames[0][0] < t - WINDOW_S:
            self._frames.popleft()
        if self._frames[-1][0] - self._frames[0][0] < WINDOW_S * 0.75:
            self._learn(change, np.zeros_like(smoky), mean, std, sat)
            return None
        varies = np.stack([f[2] for f in self._frames]).std(axis=0) >= MIN_VARIATION
        self._learn(change, ~varies, mean, std, sat)
        share = np.mean(np.stack([f[1] for f in self._frames]), axis=0)
        result: npt.NDArray[np.bool_] = (share >= PERSISTENT) & varies
        return result

    def _learn(
        self,
        change: F32,
        steady: npt.NDArray[np.bool_],
        mean: F32,
        std: F32,
        sat: F32,
    ) -> None:
        """The background follows the scene where nothing changed (dusk, seasons), and takes in
        a change that has stopped moving within seconds (someone who was in the first frames,
        a van that parked, a sign switched on): smoke keeps moving and is not taken in."""
        assert self._bg is not None
        calm = np.abs(change) <= self.min_change
        rate = np.where(calm, LEARN_RATE, np.where(steady, ABSORB_RATE, 0.0)).astype(np.float32)
        for now, bg in zip((mean, std, sat), self._bg, strict=True):
            bg += rate * (now - bg)

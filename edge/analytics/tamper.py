"""Camera tamper detection (ANSSI/CNPP R61): covered or sprayed, defocused, moved, signal lost.

Pure: :meth:`TamperDetector.update` takes the analysed luma plane and its time, and
:meth:`TamperDetector.tick` the time alone (called when no frame arrives); both return the
:class:`TamperChange` values (raised / cleared, with a cause). No threads, no I/O.

Measures are chosen to ignore what a street does by itself:

- *contrast* (standard deviation of luma) against the learned reference: a hand, tape or paint
  on the lens collapses it; a lighting ramp scales it only gently, and the reference follows
  slow drifts;
- *sharpness* as mean gradient magnitude divided by contrast, so it does not move with
  brightness or gain, only with focus (a defocused or sprayed lens smears edges);
- *layout*: normalised cross-correlation of a coarse edge thumbnail with the reference, which a
  global brightness change leaves alone but a camera turned away destroys;
- every condition must hold for ``hold_seconds`` (a bus passing in front lasts a few seconds)
  and a raised alert clears after the scene is normal for ``clear_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..config import TamperConfig

COVERED = "covered"
DEFOCUSED = "defocused"
MOVED = "moved"
SIGNAL_LOST = "signal_lost"
CAUSES = (COVERED, DEFOCUSED, MOVED, SIGNAL_LOST)

#: Time constants of the reference's learning while the scene is still, and while it moves:
#: slow enough that paint sprayed over a minute or two is caught, fast enough for dusk.
REFERENCE_TAU_S = 120.0
REFERENCE_TAU_MOVING_S = 480.0


@dataclass(frozen=True, slots=True)
class TamperChange:
    cause: str
    raised: bool
    """True when the condition starts, False when it clears."""
    t: float
    measures: dict[str, float]


@dataclass(frozen=True, slots=True)
class SceneMeasures:
    contrast: float
    sharpness: float
    thumbnail: npt.NDArray[np.float32]


def measure(y: npt.NDArray[np.uint8], *, thumb: tuple[int, int] = (24, 32)) -> SceneMeasures:
    f = y.astype(np.float32)
    contrast = float(f.std())
    gx = np.abs(np.diff(f, axis=1)).mean()
    gy = np.abs(np.diff(f, axis=0)).mean()
    sharpness = float(gx + gy) / (contrast + 1.0)
    # Edge thumbnail: gradient magnitude pooled over a coarse grid (robust to gain and offset).
    grad = np.zeros_like(f)
    grad[:, 1:] += np.abs(np.diff(f, axis=1))
    grad[1:, :] += np.abs(np.diff(f, axis=0))
    th, tw = thumb
    h, w = f.shape
    gh, gw = h // th, w // tw
    pooled = grad[: gh * th, : gw * tw].reshape(th, gh, tw, gw).mean(axis=(1, 3))
    pooled = pooled - pooled.mean()
    norm = float(np.linalg.norm(pooled))
    return SceneMeasures(contrast, sharpness, pooled / norm if norm > 0 else pooled)


class TamperDetector:
    """One camera's tamper state; not thread-safe (one per analytics loop)."""

    def __init__(self, cfg: TamperConfig) -> None:
        self.cfg = cfg
        s = cfg.sensitivity
        # Thresholds at sensitivity 0.5; higher sensitivity raises alerts at smaller changes.
        self.contrast_ratio = 0.15 + 0.3 * s  # covered below this share of the reference
        self.sharpness_ratio = 0.25 + 0.3 * s  # defocused below this share
        self.layout_min = 0.05 + 0.5 * s  # moved below this correlation
        self._ref: SceneMeasures | None = None
        self._learn: list[SceneMeasures] = []
        self._learn_start: float | None = None
        self._pending: dict[str, float] = {}  # cause -> since when the condition holds
        self._normal_since: dict[str, float] = {}
        self.active: set[str] = set()
        self._last_frame_t: float | None = None
        self._last_learn_t: float | None = None

    @property
    def learning(self) -> bool:
        return self._ref is None

    def tick(self, t: float) -> list[TamperChange]:
        """No frame at ``t``: raises ``signal_lost`` after ``signal_lost_seconds``."""
        if self._last_frame_t is None or SIGNAL_LOST in self.active:
            return []
        gap = t - self._last_frame_t
        if gap >= self.cfg.signal_lost_seconds:
            self.active.add(SIGNAL_LOST)
            return [TamperChange(SIGNAL_LOST, True, t, {"seconds_without_frames": round(gap, 2)})]
        return []

    def update(
        self, y: npt.NDArray[np.uint8], t: float, *, moving: bool = False
    ) -> list[TamperChange]:
        """Measure a frame. ``moving`` (from the motion detector) slows the learning of the
        reference fourfold, so passing objects leave little trace in it while a busy street
        still follows dusk and dawn."""
        changes: list[TamperChange] = []
        self._last_frame_t = t
        if SIGNAL_LOST in self.active:
            self.active.discard(SIGNAL_LOST)
            changes.append(TamperChange(SIGNAL_LOST, False, t, {}))
        m = measure(y)
        if self._ref is None:
            if self._learn_start is None:
                self._learn_start = t
            self._learn.append(m)
            if t - self._learn_start >= self.cfg.learn_seconds and len(self._learn) >= 3:
                self._ref = SceneMeasures(
                    float(np.median([x.contrast for x in self._learn])),
                    float(np.median([x.sharpness for x in self._learn])),
                    self._learn[-1].thumbnail,
                )
                self._learn = []
            return changes
        ref = self._ref
        contrast = m.contrast / max(ref.contrast, 1e-3)
        sharp = m.sharpness / max(ref.sharpness, 1e-6)
        layout = float((m.thumbnail * ref.thumbnail).sum())
        covered = contrast < self.contrast_ratio
        conditions = {
            COVERED: covered,
            # A covered lens is also blurred and unrecognisable: report the one real cause.
            DEFOCUSED: not covered and sharp < self.sharpness_ratio,
            MOVED: not covered and sharp >= self.sharpness_ratio and layout < self.layout_min,
        }
        measures = {
            "contrast_ratio": round(contrast, 3),
            "sharpness_ratio": round(sharp, 3),
            "layout_correlation": round(layout, 3),
        }
        for cause, holds in conditions.items():
            changes.extend(self._step(cause, holds, t, measures))
        dt = 0.0 if self._last_learn_t is None else max(0.0, t - self._last_learn_t)
        self._last_learn_t = t
        if not self.active and not self._pending:
            # Follow slow changes of a normal scene (dusk, seasons, a new shop sign), with a
            # time constant in seconds so the analysis rate does not change it.
            a = min(1.0, dt / (REFERENCE_TAU_MOVING_S if moving else REFERENCE_TAU_S))
            self._ref = SceneMeasures(
                ref.contrast + a * (m.contrast - ref.contrast),
                ref.sharpness + a * (m.sharpness - ref.sharpness),
                _renorm(ref.thumbnail + a * (m.thumbnail - ref.thumbnail)),
            )
        return changes

    def _step(
        self, cause: str, holds: bool, t: float, measures: dict[str, float]
    ) -> list[TamperChange]:
        if holds:
            self._normal_since.pop(cause, None)
            if cause in self.active:
                return []
            since = self._pending.setdefault(cause, t)
            if t - since >= self.cfg.hold_seconds:
                del self._pending[cause]
                self.active.add(cause)
                return [TamperChange(cause, True, t, measures)]
            return []
        self._pending.pop(cause, None)
        if cause not in self.active:
            return []
        since = self._normal_since.setdefault(cause, t)
        if t - since >= self.cfg.clear_seconds:
            del self._normal_since[cause]
            self.active.discard(cause)
            return [TamperChange(cause, False, t, measures)]
        return []


def _renorm(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    v = v - v.mean()
    n = float(np.linalg.norm(v))
    out: npt.NDArray[np.float32] = (v / n if n > 0 else v).astype(np.float32)
    return out

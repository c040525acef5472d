"""Tamper detection: covering, defocusing, moving the camera and losing the signal each raise
the right alert within a bounded time and clear when undone; a street's normal changes don't."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageFilter

from edge.analytics.tamper import (
    COVERED,
    DEFOCUSED,
    MOVED,
    SIGNAL_LOST,
    TamperChange,
    TamperDetector,
)
from edge.config import TamperConfig

from .conftest import require_module

skimage_data = require_module("skimage.data")

FPS = 5.0
CFG = TamperConfig(hold_seconds=3.0, clear_seconds=2.0, learn_seconds=3.0, signal_lost_seconds=3.0)
Luma = npt.NDArray[np.uint8]

SCENE = np.asarray(Image.fromarray(skimage_data.astronaut()).convert("L"))
RNG = np.random.default_rng(7)


def view(dx: int = 0) -> Luma:
    """The camera's view of the scene (a 320x240 window), shifted by ``dx`` pixels."""
    crop = SCENE[200:440, 100 + dx : 420 + dx].astype(np.int16)
    noise = RNG.integers(-3, 4, crop.shape)
    return np.asarray(np.clip(crop + noise, 0, 255), dtype=np.uint8)


def covered() -> Luma:
    return np.asarray(np.clip(RNG.normal(18, 2, (240, 320)), 0, 255), dtype=np.uint8)


def blurred() -> Luma:
    return np.asarray(Image.fromarray(view()).filter(ImageFilter.GaussianBlur(4)), dtype=np.uint8)


Scene = Callable[[float], Luma | None]


def run(
    scene: Scene, seconds: float, *, moving: bool = False, fps: float = FPS
) -> list[TamperChange]:
    det = TamperDetector(CFG)
    changes = []
    for i in range(round(seconds * fps)):
        t = i / fps
        y = scene(t)
        changes.extend(det.tick(t) if y is None else det.update(y, t, moving=moving))
    return changes


def episode(fault: Callable[[], Luma | None], start: float = 6.0, end: float = 16.0) -> Scene:
    return lambda t: fault() if start <= t < end else view()


@pytest.mark.parametrize(
    ("cause", "fault"),
    [
        (COVERED, covered),
        (DEFOCUSED, blurred),
        (MOVED, lambda: view(dx=90)),
        (SIGNAL_LOST, lambda: None),
    ],
)
def test_tampering_is_raised_in_bounded_time_and_cleared_when_undone(
    cause: str, fault: Callable[[], Luma | None]
) -> None:
    changes = run(episode(fault), 26)
    assert [(c.cause, c.raised) for c in changes] == [(cause, True), (cause, False)]
    raised, cleared = changes
    # Raised once the condition has lasted hold_seconds (signal_lost_seconds), within a second.
    # (signal loss counts from the last frame, one frame period before the fault).
    assert 6.0 + 3.0 - 1 / FPS <= raised.t <= 6.0 + 3.0 + 1.0
    # Cleared once the scene is back for clear_seconds (the first frame back for lost signal).
    limit = 16.0 if cause == SIGNAL_LOST else 16.0 + 2.0 + 1.0
    assert 16.0 <= cleared.t <= limit


def test_sprayed_lens_reads_as_covered() -> None:
    def sprayed() -> Luma:
        haze = view().astype(np.float32) * 0.15 + 200  # white paint: washed out, low contrast
        return np.asarray(
            Image.fromarray(haze.astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
        )

    changes = run(episode(sprayed), 26)
    assert [(c.cause, c.raised) for c in changes] == [(COVERED, True), (COVERED, False)]


def test_lighting_ramp_raises_nothing() -> None:
    def dusk(t: float) -> Luma:
        gain = 1.0 - 0.8 * min(1.0, t / 1800.0)  # the light falls to 20 % in half an hour
        lit = view().astype(np.float32) * gain + 10 * (1 - gain)
        return np.asarray(np.clip(lit, 0, 255), dtype=np.uint8)

    # A frame every five seconds is enough for a slow ramp (learning is timed in seconds).
    assert run(dusk, 1900, fps=0.2) == []
    assert run(dusk, 1900, fps=0.2, moving=True) == []  # a busy street: slower learning


def test_paint_sprayed_over_two_minutes_is_caught() -> None:
    def spray(t: float) -> Luma:
        k = min(1.0, max(0.0, (t - 10.0) / 120.0))  # the lens whitens over two minutes
        sprayed = view().astype(np.float32) * (1 - 0.85 * k) + 200 * k
        return np.asarray(np.clip(sprayed, 0, 255), dtype=np.uint8)

    changes = run(spray, 200, fps=1)
    assert [(c.cause, c.raised) for c in changes][:1] == [(COVERED, True)]


def test_passing_bus_raises_nothing() -> None:
    def bus(t: float) -> Luma:
        y = view()
        if 8.0 <= t < 11.0:  # a bus fills two thirds of the view for three seconds... almost
            x = int((t - 8.0) / 3.0 * 320) - 220
            y[20:240, max(0, x) : max(0, x + 220)] = 170
        return y

    assert run(bus, 30) == []


def test_sensitivity_scales_the_thresholds() -> None:
    lax = TamperDetector(TamperConfig(sensitivity=0.0))
    keen = TamperDetector(TamperConfig(sensitivity=1.0))
    assert lax.contrast_ratio < keen.contrast_ratio
    assert lax.sharpness_ratio < keen.sharpness_ratio
    assert lax.layout_min < keen.layout_min

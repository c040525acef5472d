"""The unit's own analytics model on the unit's own CPU.

Skips unless the unit's configuration (``/etc/edge/edge.toml``) names a detector model. Checks
that the file on disk is the pinned one, that LiteRT loads and runs it, and that inference at
the configured thread count keeps up with the configured analytics rate with a margin of two
(the recorder needs the rest of the CPU).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edge.config import DEFAULT_CONFIG_PATH, load


def test_configured_model_is_pinned_and_keeps_up_with_the_analytics_rate() -> None:
    if not DEFAULT_CONFIG_PATH.exists():
        pytest.skip(f"{DEFAULT_CONFIG_PATH} does not exist (not an installed unit)")
    cfg, _origin = load(DEFAULT_CONFIG_PATH)
    det_cfg = cfg.analytics.detector
    if det_cfg.model_path is None or not Path(det_cfg.model_path).is_file():
        pytest.skip("no analytics.detector.model_path on this unit")
    assert det_cfg.model_sha256 is not None, "the unit's model must be pinned (model_sha256)"
    from edge.analytics.litert import LiteRTDetector

    det = LiteRTDetector.from_config(det_cfg)
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, size=(270, 480, 3), dtype=np.uint8)
    for _ in range(3):
        det.detect(frame)
    runs = 20
    t0 = time.perf_counter()
    for _ in range(runs):
        det.detect(frame)
    per_frame = (time.perf_counter() - t0) / runs
    budget = 1.0 / cfg.analytics.rate_fps
    assert per_frame * 2 <= budget, (
        f"{per_frame * 1e3:.1f} ms per inference leaves no margin at {cfg.analytics.rate_fps} fps"
    )

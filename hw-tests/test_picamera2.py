"""The Pi camera through picamera2: one main stream (no unmasked lores side stream), timestamps
from the sensor. Runs on a unit with a camera; skips with the reason elsewhere."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge.capture.loop import CaptureLoop, CaptureState
from edge.capture.picamera2 import Picamera2Source
from edge.frames import Frame

TIME_LIMIT_S = 60.0


@pytest.fixture
def camera_present(raspberry_pi: None) -> None:
    picamera2 = pytest.importorskip(
        "picamera2", reason="picamera2 not installed (python3-picamera2 on the unit's image)"
    )
    if not picamera2.Picamera2.global_camera_info():
        pytest.skip("no camera detected by libcamera (ribbon cable, camera_auto_detect)")


def test_main_stream(camera_present: None) -> None:
    deadline = time.monotonic() + TIME_LIMIT_S
    source = Picamera2Source(1280, 720, 25.0)
    source.open()
    frames: list[Frame] = []
    try:
        assert source._camera.camera_configuration().get("lores") is None, "no unmasked lores"
        for _ in range(75):
            frame = source.read()
            assert frame is not None
            frames.append(frame)
            assert time.monotonic() < deadline, "camera too slow"
    finally:
        source.close()
    assert all((f.width, f.height) == (1280, 720) for f in frames)
    assert [f.index for f in frames] == list(range(75))
    intervals = np.diff([f.mono_ns for f in frames[25:]]) / 1e6
    assert 35 <= float(np.median(intervals)) <= 45, "sensor timestamps at 25 fps"
    assert abs(frames[-1].wall_ns - time.time_ns()) < 2e9
    # A picture, not a blank buffer: the luma varies.
    assert float(frames[-1].y.std()) > 1.0


def test_capture_loop_runs_the_camera(camera_present: None) -> None:
    source = Picamera2Source(1280, 720, 25.0)
    loop = CaptureLoop(source, lambda frame: None, name="cam1")
    loop.start()
    try:
        time.sleep(4.0)
        stats = loop.stats()
    finally:
        loop.stop()
        assert loop.join(10)
    assert stats.state is CaptureState.RUNNING and stats.frames_in >= 75
    assert stats.fps is not None and 20 <= stats.fps <= 30
    assert loop.state is CaptureState.STOPPED

"""The parts of the picamera2 source that need no camera: buffer layout, lores size, sensor
timestamps, and a clear error where picamera2 is absent (the real camera: hw-tests)."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

from edge.capture import open_source
from edge.capture.picamera2 import Picamera2Source, _lores_size, i420_from_buffer
from edge.config import CameraConfig
from edge.errors import CaptureError
from edge.frames import Frame

from .conftest import NOT_APPLICABLE


def test_strided_yuv420_buffer_is_unpacked() -> None:
    width, height, stride = 6, 4, 8  # libcamera pads rows to its alignment
    y = np.arange(24, dtype=np.uint8).reshape(4, 6)
    u = np.full((2, 3), 100, dtype=np.uint8)
    v = np.full((2, 3), 200, dtype=np.uint8)
    buffer = np.zeros(stride * height * 3 // 2, dtype=np.uint8)
    buffer[: stride * height].reshape(height, stride)[:, :width] = y
    chroma = (stride // 2) * (height // 2)
    start = stride * height
    buffer[start : start + chroma].reshape(2, 4)[:, :3] = u
    buffer[start + chroma : start + 2 * chroma].reshape(2, 4)[:, :3] = v
    py, pu, pv = i420_from_buffer(buffer, width, height, stride)
    frame = Frame.from_planes(py, pu, pv, index=0, mono_ns=0, wall_ns=0)
    assert np.array_equal(frame.y, y) and np.array_equal(frame.u, u) and np.array_equal(frame.v, v)


def test_lores_keeps_the_aspect_ratio() -> None:
    assert _lores_size(1920, 1080, 640) == (640, 360)
    assert _lores_size(1280, 960, 640) == (640, 480)
    assert _lores_size(320, 240, 640) == (320, 240)  # never larger than main


def test_sensor_timestamps_are_used_when_plausible() -> None:
    # Bounds are taken from clock readings around each call, not from a fixed tolerance: a
    # loaded machine may pause the test anywhere.
    wall_before = time.time_ns()
    now = time.monotonic_ns()
    mono, wall = Picamera2Source._timestamps({"SensorTimestamp": now - 30_000_000})
    wall_after = time.time_ns()
    assert mono == now - 30_000_000
    # The sensor's instant on the wall clock: 30 ms before ``now``, which lies between the two
    # wall readings (plus any pause between the call's own two clock readings).
    assert wall_before - 30_000_000 <= wall <= 2 * wall_after - wall_before - 30_000_000
    # Another clock base (far in the past or the future): fall back to the time of reading.
    for metadata in ({"SensorTimestamp": 5}, {"SensorTimestamp": now + 10**12}, {}):
        before = time.monotonic_ns()
        mono, _ = Picamera2Source._timestamps(metadata)
        assert before <= mono <= time.monotonic_ns()


@pytest.mark.skipif(
    importlib.util.find_spec("picamera2") is not None,
    reason=NOT_APPLICABLE + "picamera2 is installed (hw-tests/test_picamera2.py covers it)",
)
def test_missing_picamera2_is_a_clear_permanent_error() -> None:
    source = open_source(CameraConfig(source="picamera2", width=1280, height=720))
    assert isinstance(source, Picamera2Source)
    assert source.lores_size == (640, 360)
    with pytest.raises(CaptureError, match="picamera2 is not installed") as info:
        source.open()
    assert not info.value.transient
    source.close()

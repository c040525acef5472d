"""The parts of the picamera2 source that need no camera: buffer layout, sensor timestamps, no
unmasked side stream, and a clear error where picamera2 is absent (the real camera: hw-tests)."""

from __future__ import annotations

import importlib.util
import sys
import time
import types
from typing import Any, ClassVar

import numpy as np
import pytest

from edge.capture import open_source
from edge.capture.picamera2 import Picamera2Source, i420_from_buffer
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


class _Request:
    def __init__(self, buffers: dict[str, np.ndarray[Any, np.dtype[np.uint8]]]) -> None:
        self.buffers = buffers
        self.released = False

    def get_metadata(self) -> dict[str, Any]:
        return {}

    def make_buffer(self, name: str) -> np.ndarray[Any, np.dtype[np.uint8]]:
        return self.buffers[name].copy()

    def release(self) -> None:
        self.released = True


class _StandInCamera:
    """Stands in for picamera2.Picamera2 (no camera here): grants every stream it is asked for,
    and fills each with a picture, so any stream the source configures could be read."""

    configured: ClassVar[dict[str, Any]] = {}

    def __init__(self, camera_num: int) -> None:
        self.streams: dict[str, tuple[int, int]] = {}

    def create_video_configuration(self, **kwargs: Any) -> dict[str, Any]:
        return kwargs

    def configure(self, config: dict[str, Any]) -> None:
        _StandInCamera.configured = config
        for name in ("main", "lores", "raw"):
            if isinstance(config.get(name), dict):
                self.streams[name] = tuple(config[name]["size"])

    def camera_configuration(self) -> dict[str, Any]:
        return {name: {"stride": w} for name, (w, _) in self.streams.items()}

    def start(self) -> None:
        pass

    def capture_request(self) -> _Request:
        rng = np.random.default_rng(1)
        return _Request(
            {
                name: rng.integers(0, 256, w * h * 3 // 2, dtype=np.uint8)
                for name, (w, h) in self.streams.items()
            }
        )

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_no_unmasked_side_stream_is_captured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ISP scales a lores stream from the unmasked sensor image: masking the small picture
    afterwards cannot remove what the scaler carried across a mask's edge. The source must ask
    for the main stream only and keep no picture besides the frame it returns (which the
    pipeline masks before anything else sees it)."""
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=_StandInCamera))
    source = Picamera2Source(64, 48, 25.0)
    source.open()
    try:
        frame = source.read()
    finally:
        source.close()
    assert frame is not None and (frame.width, frame.height) == (64, 48)
    config = _StandInCamera.configured
    assert set(k for k in ("main", "lores", "raw") if config.get(k)) == {"main"}
    # Nothing else holds a picture: the only frame array reachable from the source is none.
    held = [v for v in vars(source).values() if isinstance(v, (Frame, np.ndarray))]
    assert held == [] and not hasattr(source, "lores")


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
    with pytest.raises(CaptureError, match="picamera2 is not installed") as info:
        source.open()
    assert not info.value.transient
    source.close()

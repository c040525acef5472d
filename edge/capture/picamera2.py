"""The Raspberry Pi camera through picamera2 (libcamera).

Imported only when a camera is configured with ``source = "picamera2"``: picamera2 exists on
the unit's image only. One stream comes from the ISP: ``main`` (YUV420 at the recording size).
There is deliberately no ``lores`` stream: the ISP would scale it from the *unmasked* sensor
image, so pixels just outside a mask would carry what the mask hides (the scaler's filter
reaches across the mask's edge), and masking the small picture afterwards cannot undo that.
Analytics decimates the masked main frame instead (:mod:`edge.analytics.shm`).

Timestamps: libcamera's ``SensorTimestamp`` (start of exposure of the first line, in ns on the
kernel's monotonic clock) is used when it is plausible (not in the future, less than a second
old); the wall-clock time is derived from it with the current offset between the two clocks.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..errors import CaptureError
from ..frames import Frame, check_dimensions
from .base import FrameSource

log = logging.getLogger(__name__)

#: A sensor timestamp older than this is not trusted (another clock base, a stalled pipeline).
_MAX_SENSOR_AGE_NS = 1_000_000_000


def i420_from_buffer(
    buffer: np.ndarray[Any, np.dtype[np.uint8]], width: int, height: int, stride: int
) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], ...]:
    """Y, U, V views of a libcamera YUV420 buffer whose rows are ``stride`` bytes apart."""
    flat = buffer.reshape(-1)
    luma = stride * height
    chroma_stride = stride // 2
    chroma = chroma_stride * (height // 2)
    y = flat[:luma].reshape(height, stride)[:, :width]
    u = flat[luma : luma + chroma].reshape(height // 2, chroma_stride)[:, : width // 2]
    v = flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, chroma_stride)[:, : width // 2]
    return y, u, v


class Picamera2Source(FrameSource):
    """The CSI camera of the unit: one masked-by-the-pipeline main stream, nothing else."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        *,
        camera_num: int = 0,
        buffer_count: int = 6,
    ) -> None:
        check_dimensions(width, height)
        super().__init__(width, height, fps)
        self.camera_num = camera_num
        self.buffer_count = buffer_count
        self.description = f"Raspberry Pi camera {camera_num} ({width}x{height}@{fps:g})"
        self._camera: Any = None
        self._strides: dict[str, int] = {}
        self._index = 0

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CaptureError(
                f"{self.description}: picamera2 is not installed ({exc})", transient=False
            ) from None
        self.close()
        try:
            camera = Picamera2(self.camera_num)
            config = camera.create_video_configuration(
                main={"size": (self.width, self.height), "format": "YUV420"},
                controls={"FrameRate": float(self.fps)},
                buffer_count=self.buffer_count,
                encode="main",
            )
            camera.configure(config)
            actual = camera.camera_configuration()
            self._strides = {"main": int(actual["main"]["stride"])}
            camera.start()
        except (RuntimeError, OSError, IndexError) as exc:
            # libcamera reports a missing or busy camera as RuntimeError/IndexError: the ribbon
            # cable may be reseated, another process may let go, so retrying is worthwhile.
            raise CaptureError(f"{self.description}: cannot start: {exc}", transient=True) from None
        self._camera = camera
        log.debug("%s: started, strides %s", self.description, self._strides)

    def read(self) -> Frame | None:
        if self._camera is None:
            raise CaptureError(f"{self.description}: read before open", transient=False)
        try:
            request = self._camera.capture_request()
        except (RuntimeError, OSError, TimeoutError) as exc:
            raise CaptureError(
                f"{self.description}: capture failed: {exc}", transient=True
            ) from None
        try:
            metadata = request.get_metadata()
            mono_ns, wall_ns = self._timestamps(metadata)
            index = self._index
            self._index += 1  # a frame the budget refuses is gone all the same
            frame = self.new_frame(index)  # first: a refused frame costs no copy
            main = request.make_buffer("main")
            y, u, v = i420_from_buffer(main, self.width, self.height, self._strides["main"])
            frame.y[...], frame.u[...], frame.v[...] = y, u, v
            frame.mono_ns, frame.wall_ns = mono_ns, wall_ns
        finally:
            request.release()  # the buffer goes back to the camera; we copied what we need
        return frame

    @staticmethod
    def _timestamps(metadata: dict[str, Any]) -> tuple[int, int]:
        now_mono, now_wall = time.monotonic_ns(), time.time_ns()
        sensor = metadata.get("SensorTimestamp")
        if isinstance(sensor, int):
            age = now_mono - sensor
            if 0 <= age < _MAX_SENSOR_AGE_NS:
                return sensor, now_wall - age
        return now_mono, now_wall

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.stop()
        finally:
            camera.close()

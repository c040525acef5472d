"""The Raspberry Pi camera through picamera2 (libcamera).

Imported only when a camera is configured with ``source = "picamera2"``: picamera2 exists on
the unit's image only. Two streams come from the ISP in one request: ``main`` (YUV420 at the
recording size) for recording, and ``lores`` (YUV420, smaller) for analytics, so analytics
never pays for downscaling. Both come from the same exposure and carry the same index and
timestamps. The lores frame is *not* masked by the capture thread's ``on_frame`` (it sees the
main frame): whoever uses :attr:`Picamera2Source.lores` masks it first, at its own size.

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


def _lores_size(width: int, height: int, lores_width: int) -> tuple[int, int]:
    """Lores size with the main stream's aspect ratio, even, no larger than main."""
    w = min(width, lores_width) // 2 * 2
    h = max(2, round(height * w / width) // 2 * 2)
    return w, h


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
    """The CSI camera of the unit; ``lores`` holds the analytics frame of the last :meth:`read`."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        *,
        camera_num: int = 0,
        lores_width: int = 640,
        buffer_count: int = 6,
    ) -> None:
        check_dimensions(width, height)
        super().__init__(width, height, fps)
        self.camera_num = camera_num
        self.lores_size = _lores_size(width, height, lores_width)
        self.buffer_count = buffer_count
        self.description = f"Raspberry Pi camera {camera_num} ({width}x{height}@{fps:g})"
        #: The analytics (lores) frame captured with the last main frame, not yet masked.
        self.lores: Frame | None = None
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
                lores={"size": self.lores_size, "format": "YUV420"},
                controls={"FrameRate": float(self.fps)},
                buffer_count=self.buffer_count,
                encode="main",
            )
            camera.configure(config)
            actual = camera.camera_configuration()
            self._strides = {name: int(actual[name]["stride"]) for name in ("main", "lores")}
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
            main = request.make_buffer("main")
            lores = request.make_buffer("lores")
            y, u, v = i420_from_buffer(main, self.width, self.height, self._strides["main"])
            frame = Frame.from_planes(y, u, v, index=index, mono_ns=mono_ns, wall_ns=wall_ns)
            lw, lh = self.lores_size
            ly, lu, lv = i420_from_buffer(lores, lw, lh, self._strides["lores"])
            self.lores = Frame.from_planes(
                ly, lu, lv, index=index, mono_ns=mono_ns, wall_ns=wall_ns
            )
        finally:
            request.release()  # the buffer goes back to the camera; we copied what we need
        self._index += 1
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
        self.lores = None
        if camera is None:
            return
        try:
            camera.stop()
        finally:
            camera.close()

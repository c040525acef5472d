"""The Frame type that flows from capture through masking to the encoder and analytics.

A frame is one contiguous I420 (YUV 4:2:0 planar, BT.601 limited range) buffer; ``y``, ``u``
and ``v`` are views into it, so masking in place changes what every later stage sees and the
buffer can be handed to PyAV or shared memory without copying.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Plane = npt.NDArray[np.uint8]


def i420_size(width: int, height: int) -> int:
    """Bytes of one I420 frame of this size."""
    return width * height * 3 // 2


def check_dimensions(width: int, height: int) -> None:
    """I420 needs even dimensions; refuse anything else early and clearly."""
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"frame size {width}x{height}: width and height must be positive and even")


@dataclass(slots=True)
class Frame:
    """One video frame.

    ``index`` counts frames from the source since the daemon started (gaps mean drops);
    ``mono_ns`` is ``time.monotonic_ns()`` at capture (for rates and latencies), ``wall_ns`` is
    ``time.time_ns()`` at capture (for evidence timestamps).
    """

    data: Plane
    width: int
    height: int
    index: int
    mono_ns: int
    wall_ns: int
    y: Plane = field(init=False, repr=False)
    u: Plane = field(init=False, repr=False)
    v: Plane = field(init=False, repr=False)
    #: The :class:`edge.framepool.FramePool` buffer behind ``data``, None when not pooled.
    pool_buffer: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_dimensions(self.width, self.height)
        w, h = self.width, self.height
        if self.data.dtype != np.uint8 or self.data.size != i420_size(w, h):
            raise ValueError(f"I420 buffer for {w}x{h} must hold {i420_size(w, h)} uint8 values")
        flat = self.data.reshape(-1)
        if not np.shares_memory(flat, self.data):
            raise ValueError("I420 buffer must be contiguous")
        luma = w * h
        chroma = luma // 4
        self.data = flat
        self.y = flat[:luma].reshape(h, w)
        self.u = flat[luma : luma + chroma].reshape(h // 2, w // 2)
        self.v = flat[luma + chroma :].reshape(h // 2, w // 2)

    @classmethod
    def blank(
        cls, width: int, height: int, *, index: int = 0, mono_ns: int = 0, wall_ns: int = 0
    ) -> Frame:
        """A mid-grey frame (Y=U=V=128)."""
        check_dimensions(width, height)
        data = np.full(i420_size(width, height), 128, dtype=np.uint8)
        return cls(data, width, height, index, mono_ns, wall_ns)

    @classmethod
    def from_planes(
        cls, y: Plane, u: Plane, v: Plane, *, index: int, mono_ns: int, wall_ns: int
    ) -> Frame:
        """Copy three separate planes into one contiguous frame."""
        h, w = y.shape
        data = np.empty(i420_size(w, h), dtype=np.uint8)
        frame = cls(data, w, h, index, mono_ns, wall_ns)
        frame.y[...] = y
        frame.u[...] = u
        frame.v[...] = v
        return frame

    def as_yuv420p(self) -> Plane:
        """The buffer shaped as PyAV's ``VideoFrame.from_ndarray(..., format="yuv420p")`` wants."""
        return self.data.reshape(self.height * 3 // 2, self.width)

    def copy(self) -> Frame:
        return Frame(
            self.data.copy(), self.width, self.height, self.index, self.mono_ns, self.wall_ns
        )

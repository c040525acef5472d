"""The interface every video source implements.

Threading: a source is driven by exactly one thread (the daemon's capture thread). ``read``
blocks until the next frame is due or available; sources that pace themselves (synthetic,
files) sleep until the frame's time. Nothing here is shared between threads.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FrameBudgetError
from ..frames import Frame, i420_size

if TYPE_CHECKING:
    from ..config import PrivacyMaskConfig
    from ..framepool import FramePool


class FrameSource(abc.ABC):
    """A camera or stand-in producing I420 frames of a fixed size."""

    #: Human description for logs and diagnostics (never contains credentials).
    description: str

    def __init__(self, width: int, height: int, fps: float) -> None:
        self.width = width
        self.height = height
        self.fps = fps
        #: Where frames come from in edged (set before :meth:`open`); None: plain allocation.
        self.pool: FramePool | None = None

    def new_frame(self, index: int) -> Frame:
        """An empty frame of the source's size to convert or render into: from the pool when
        there is one, which may raise :class:`edge.errors.FrameBudgetError` (the caller has
        then written nothing and the frame is counted as dropped)."""
        pool = self.pool
        if pool is None:
            data = np.empty(i420_size(self.width, self.height), dtype=np.uint8)
            return Frame(data, self.width, self.height, index, 0, 0)
        frame = pool.acquire(self.width, self.height, index)
        if frame is None:
            raise FrameBudgetError(index)
        return frame

    @abc.abstractmethod
    def open(self) -> None:
        """Start the source. Raises :class:`edge.errors.CaptureError` on failure."""

    @abc.abstractmethod
    def read(self) -> Frame | None:
        """Return the next frame, or ``None`` at the end of a finite source.

        Raises :class:`edge.errors.CaptureError` when the source fails; ``transient=True`` means
        the caller may :meth:`close` and :meth:`open` again after a back-off. Raises
        :class:`edge.errors.FrameBudgetError` when a :attr:`pool` had no buffer for the frame:
        the picture is consumed and the next call reads the next one.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the source; safe to call twice and after a failed :meth:`open`."""

    def set_privacy_masks(self, masks: Sequence[PrivacyMaskConfig]) -> None:  # noqa: B027 - a hook
        """The camera's privacy masks, for a source that must apply them *before* it scales or
        converts a picture (no output pixel outside a mask may depend on one inside it).

        Any thread may call this (SIGHUP reload); the source uses the new masks from its next
        conversion. The pipeline still masks every frame at the configured size afterwards.
        Sources that produce frames in the configured geometry directly need nothing here.
        """

    def answers(self) -> bool | None:
        """Whether the camera answers a cheap check (a TCP connection, a device node) without
        opening the stream; ``None`` when this kind of source cannot tell.

        The capture loop asks during a back-off, so a camera that comes back is reopened at
        once rather than at the end of a wait of up to ``backoff_max``. Must return within
        about a second.
        """
        return None

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Read a camera for a few seconds and say how it behaves, without keeping or showing a picture.

For installers checking a camera or an RTSP address before the daemon uses it, and for
maintenance staff, who are not authorised viewers: the report holds rates, gaps, errors and two
picture-free health hints (a black picture, a frozen picture), never pixels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..frames import Frame
from .base import FrameSource
from .loop import FINAL_STATES, CaptureLoop, CaptureState

#: Mean luma under which a picture is reported as black (limited range: black is 16).
BLACK_LUMA = 24.0


@dataclass(frozen=True, slots=True)
class ProbeReport:
    source: str
    input: str | None
    """What the source sends, when it says ("h264 1920x1080 25 fps")."""
    width: int
    height: int
    fps_configured: float
    seconds: float
    state: str
    reason: str
    """The last state change's reason: the error when the camera failed."""
    frames: int
    fps_measured: float | None
    first_frame_s: float | None
    """Seconds from starting to the first frame (opening, RTSP set-up, first key frame)."""
    source_gaps: int
    frames_lost: int
    reconnects: int
    luma_mean: float | None
    frozen_frames: int
    """Frames identical to the one before (a hung camera keeps sending the same picture)."""

    @property
    def ok(self) -> bool:
        return self.frames > 0 and self.state in (CaptureState.RUNNING, CaptureState.ENDED)

    def problems(self) -> list[str]:
        """Plain-language findings; empty when the camera looks healthy."""
        found = []
        if self.frames == 0:
            found.append(f"no frames ({self.state}: {self.reason})")
        if self.reconnects:
            found.append(f"{self.reconnects} reconnection(s) during the probe ({self.reason})")
        if self.fps_measured is not None and self.fps_measured < 0.8 * self.fps_configured:
            found.append(
                f"{self.fps_measured:.1f} fps measured, {self.fps_configured:g} configured"
            )
        if self.frames_lost:
            found.append(f"{self.frames_lost} frame(s) lost in {self.source_gaps} gap(s)")
        if self.luma_mean is not None and self.luma_mean < BLACK_LUMA:
            found.append("the picture is black (lens covered, camera obstructed, no IR at night?)")
        if self.frames > 1 and self.frozen_frames >= self.frames - 1:
            found.append("the picture never changes (frozen camera?)")
        return found


def probe(source: FrameSource, seconds: float) -> ProbeReport:
    """Run ``source`` in a :class:`CaptureLoop` for ``seconds`` and summarise what happened."""
    # Written by the capture thread only, read after join().
    luma_sum = 0.0
    frozen = 0
    previous: np.ndarray | None = None
    first_at: list[float] = []
    started = time.monotonic()

    def on_frame(frame: Frame) -> None:
        nonlocal luma_sum, frozen, previous
        if not first_at:
            first_at.append(time.monotonic() - started)
        thumb = frame.y[::8, ::8]
        luma_sum += float(thumb.mean())
        if previous is not None and np.array_equal(previous, thumb):
            frozen += 1
        previous = thumb.copy()

    loop = CaptureLoop(source, on_frame, name="probe", backoff_initial=0.5, backoff_max=2.0)
    loop.start()
    deadline = started + seconds
    while time.monotonic() < deadline and loop.state not in FINAL_STATES:
        time.sleep(0.05)
    before_stop = loop.stats()  # how the camera was doing, not "stop requested"
    loop.stop()
    loop.join(15.0)
    stats = loop.stats()
    return ProbeReport(
        source=source.description,
        input=getattr(source, "input_description", None),
        width=source.width,
        height=source.height,
        fps_configured=source.fps,
        seconds=round(time.monotonic() - started, 2),
        state=str(before_stop.state),
        reason=before_stop.reason,
        frames=stats.frames_in,
        fps_measured=None if stats.fps is None else round(stats.fps, 2),
        first_frame_s=round(first_at[0], 2) if first_at else None,
        source_gaps=stats.source_gaps,
        frames_lost=stats.frames_lost,
        reconnects=stats.reconnects,
        luma_mean=round(luma_sum / stats.frames_in, 1) if stats.frames_in else None,
        frozen_frames=frozen,
    )

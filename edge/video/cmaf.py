"""Pure helpers of the CMAF segmenter: ISO-BMFF box splitting and the segment-boundary plan.

No PyAV, no I/O: the encoder feeds these with bytes and timestamps, and the tests exercise them
on plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..errors import EncodeError

#: Top-level boxes that make up the init segment; everything else belongs to media segments.
INIT_BOX_TYPES = frozenset({"ftyp", "moov"})
#: Top-level boxes a media segment may hold (``styp``/``sidx``/``prft`` only with some flags).
MEDIA_BOX_TYPES = frozenset({"styp", "sidx", "prft", "emsg", "moof", "mdat"})


@dataclass(frozen=True, slots=True)
class Box:
    type: str
    offset: int
    size: int


def iter_boxes(data: bytes | bytearray | memoryview) -> tuple[list[Box], int]:
    """Complete top-level boxes at the start of ``data`` and the number of bytes they span.

    A trailing incomplete box is left out (its bytes have not all arrived yet). Raises
    :class:`EncodeError` on a box header that cannot be valid (size below 8, 64-bit sizes we
    never produce, size 0 meaning "to end of file").
    """
    boxes: list[Box] = []
    pos = 0
    end = len(data)
    while pos + 8 <= end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = bytes(data[pos + 4 : pos + 8]).decode("latin-1")
        if size == 1:
            if pos + 16 > end:
                break
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            if size < 16:
                raise EncodeError(f"muxer output: box {kind!r} at {pos} has invalid size {size}")
        elif size < 8:
            raise EncodeError(f"muxer output: box {kind!r} at {pos} has invalid size {size}")
        if pos + size > end:
            break
        boxes.append(Box(kind, pos, size))
        pos += size
    return boxes, pos


def box_types(data: bytes) -> list[str]:
    """Types of the complete top-level boxes of ``data`` (for checks and tests)."""
    return [b.type for b in iter_boxes(data)[0]]


def frame_rate(fps: float) -> Fraction:
    """The exact frame rate of a configured ``fps`` (25, 12.5 → 25/2, 29.97 → 30000/1001)."""
    if fps <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    for nominal in (24, 30, 48, 60, 120):
        # Cameras say "29.97" for the NTSC rate 30000/1001; 2997/100 would drift from it.
        if abs(fps - nominal * 1000 / 1001) < 0.005:
            return Fraction(nominal * 1000, 1001)
    # Any other rate: the nearest fraction with a small denominator (within 1e-6 frame/s).
    return Fraction(fps).limit_denominator(1001)


def media_timescale(rate: Fraction) -> int:
    """An MP4 track timescale (≈ 90 kHz) in which every frame lasts a whole number of ticks."""
    step = rate.numerator
    return max(step, step * round(90_000 / step))


class SegmentPlan:
    """Decides which frames start a media segment, from their presentation timestamps.

    Segment boundaries lie on a fixed grid of ``segment_seconds`` counted from the first frame,
    so rounding to whole frames never accumulates drift (12.5 fps with 1 s segments gives
    13, 12, 13, 12 … frames). A frame starts a new segment when it is the first one at or past
    the next grid line, within half a frame (a timestamp a hair early is the frame that was
    meant). A gap in the timestamps (dropped frames) skips the grid lines inside it: the next
    frame opens one segment, not several empty ones.
    """

    def __init__(
        self, segment_seconds: float, rate: Fraction, tick: Fraction | None = None
    ) -> None:
        if segment_seconds <= 0:
            raise ValueError("segment_seconds must be positive")
        self.segment = Fraction(segment_seconds).limit_denominator(1000)
        self.frame = 1 / rate
        #: Unit of the timestamps given to :meth:`starts_segment` (default: one frame period).
        self.tick = self.frame if tick is None else tick
        self._first_pts: int | None = None
        self._next_boundary = Fraction(0)

    def starts_segment(self, pts: int) -> bool:
        """Whether the frame with this timestamp (in ``tick`` units) opens a segment.

        Timestamps must increase from call to call.
        """
        if self._first_pts is None:
            self._first_pts = pts
            self._next_boundary = self.segment
            return True
        t = (pts - self._first_pts) * self.tick
        if t + self.frame / 2 < self._next_boundary:
            return False
        # The grid line this frame reaches; skip every line already passed (drops).
        passed = (t + self.frame / 2) // self.segment
        self._next_boundary = (passed + 1) * self.segment
        return True

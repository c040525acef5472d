"""What the encoder/segmenter produces and the interface of whatever stores it.

A :class:`MediaSegment` is one CMAF media segment (``moof``+``mdat`` pairs starting on an IDR
frame) together with the init segment (``ftyp``+``moov``) it needs: ``init + media`` is a
complete, playable fragmented MP4. The directory sink of the foundation writes them as files;
the vault seals them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from ..privacy.commitment import MaskCommitment


@dataclass(frozen=True, slots=True)
class MediaSegment:
    camera_id: str
    sequence: int
    """0-based, consecutive per camera and per recording session."""
    init: bytes
    """The CMAF init segment this media segment decodes with."""
    media: bytes
    """The CMAF media segment (moof/mdat), starting on an IDR frame."""
    start_wall_ns: int
    """Wall-clock capture time of the first frame (ns since the epoch)."""
    end_wall_ns: int
    """Wall-clock capture time of the last frame plus one frame duration."""
    frame_count: int
    first_frame_index: int
    """Index (capture count) of the first frame, for drop accounting."""
    masks: tuple[MaskCommitment, ...] = ()
    """Which mask set and configuration version its frames were masked under (the recording
    thread fills it in; empty from tools and tests that record without a pipeline)."""

    @property
    def duration_s(self) -> float:
        return (self.end_wall_ns - self.start_wall_ns) / 1e9


class SegmentSink(abc.ABC):
    """Receives finished segments, in order, from one recording thread per camera.

    ``write`` must make the segment durable before returning (crash-only design: what ``write``
    returned for survives ``kill -9``). It may raise :class:`edge.errors.VaultError`.
    """

    @abc.abstractmethod
    def write(self, segment: MediaSegment) -> None: ...

    def recorded_until_ns(self, camera_id: str) -> int | None:
        """Wall-clock end of the newest segment already stored for the camera (before this
        run), so a restart's gap can be reported; None when the sink cannot tell."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Flush and release; called once when recording stops."""

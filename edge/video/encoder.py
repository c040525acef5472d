"""H.264 encoding and CMAF segmenting with PyAV: masked frames in, :class:`MediaSegment` out.

One :class:`SegmentEncoder` per camera and per recording session, used by the camera's
recording thread only (it holds no lock and is not thread-safe).

How segments are cut:

* The frame that opens a segment (see :class:`edge.video.cmaf.SegmentPlan`) is sent to the
  encoder as a forced IDR picture; the encoder's own GOP is twice the segment length and scene
  cut detection is off, so no other keyframe appears in between.
* PyAV's mp4 muxer writes fragmented MP4 into memory with ``frag_keyframe``: it closes a
  fragment (``moof`` + ``mdat``) when the next keyframe packet arrives. So when the packet of a
  planned boundary has been muxed, every complete box in the buffer belongs to the segments
  before it. ``delay_moov`` lets the muxer write ``moov`` after the first packet, which hardware
  encoders need (h264_v4l2m2m only knows SPS/PPS once it has produced a frame); the same flag is
  used for libx264 so that both paths cut segments the same way.
* ``ftyp`` + ``moov`` form the init segment; ``skip_trailer`` avoids an ``mfra`` box at the end.

Presentation timestamps come from each frame's monotonic capture time (``mono_ns``), counted in
ticks of the track's timescale from the session's first frame: a dropped frame, a camera
outage, a reconnection or a stalled recorder leaves a gap of its true length in the media
timeline (evidence keeps true times; a frame counter would close them up). A frame that shares
the previous one's time (a burst after a network stall) comes one tick after it, so time never
runs backwards and the next frames are back on the capture clock. Gaps
longer than :data:`TIME_GAP_S` are listed in :attr:`SegmentEncoder.time_gaps`. Wall-clock times
of each segment come from its frames (``wall_ns`` of the first frame; last frame plus one frame
duration).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.video.frame

from ..config import EncoderCodec, EncoderConfig
from ..errors import EncodeError, IntegrityError, from_av
from ..frames import Frame, check_dimensions
from .base import MediaSegment
from .cmaf import INIT_BOX_TYPES, SegmentPlan, frame_rate, iter_boxes, media_timescale
from .mediasigning import MediaSigner, iter_units, with_seis

log = logging.getLogger(__name__)

#: A pause between two frames longer than this is a time gap (reported, never closed up).
TIME_GAP_S = 1.0
#: Muxer flags; see the module docstring for why each one is there.
MOVFLAGS = "frag_keyframe+empty_moov+delay_moov+default_base_moof+skip_trailer"


def x264_options(cfg: EncoderConfig, gop: int) -> dict[str, str]:
    """libx264 private options: the configured preset with low-latency, segment-friendly GOPs.

    ``zerolatency`` removes B-frames and look-ahead so a frame's packet comes out as the frame
    goes in and a segment closes as soon as its successor starts; ``scenecut=0`` and a fixed
    ``keyint`` keep IDR frames where the segmenter puts them.
    """
    return {
        "preset": cfg.preset,
        "tune": "zerolatency",
        "forced-idr": "1",
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0",
    }


class _MemoryOutput:
    """Where the muxer writes: an append-only buffer the encoder consumes box by box.

    Not seekable on purpose: fragmented MP4 never needs to seek back, and a muxer that tried
    would fail loudly instead of patching bytes we already handed out.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def seekable(self) -> bool:
        return False


@dataclass(slots=True)
class _PendingFrame:
    pts: int
    index: int
    wall_ns: int


def _describe_open_failure(codec: EncoderCodec, exc: BaseException) -> EncodeError:
    err = from_av(exc, f"opening the {codec.value} encoder")
    if codec is EncoderCodec.V4L2M2M:
        devices = sorted(str(p) for p in Path("/dev").glob("video*"))
        hint = (
            f"V4L2 devices present: {', '.join(devices)}; none accepted H.264 encoding"
            if devices
            else "no /dev/video* device: this machine has no V4L2 memory-to-memory encoder "
            '(it is the Raspberry Pi 4 hardware encoder; use codec = "libx264" elsewhere)'
        )
        return EncodeError(f"{err} ({hint})")
    return err if isinstance(err, EncodeError) else EncodeError(str(err))


class SegmentEncoder:
    """Encodes one camera's masked frames into CMAF media segments.

    :meth:`encode` returns the segments completed by a frame (usually none), :meth:`flush`
    the final, partial one at stop. Every segment carries the init segment, so ``init + media``
    of any single segment plays on its own.
    """

    def __init__(
        self,
        camera_id: str,
        width: int,
        height: int,
        fps: float,
        cfg: EncoderConfig,
        *,
        signer: MediaSigner | None = None,
    ) -> None:
        check_dimensions(width, height)
        # ONVIF Media Signing SEIs are added to the packets here, in the recording thread,
        # before muxing: a clip of the decrypted MP4 verifies outside our tools.
        self._signer = signer
        self.camera_id = camera_id
        self.width = width
        self.height = height
        self.cfg = cfg
        self.rate = frame_rate(fps)
        # Timestamps are in ticks of the track's timescale (≈ 90 kHz), not in frames: a frame
        # delivered late keeps its own time and the next one, on time, is not pushed back.
        self.timescale = media_timescale(self.rate)
        self._tick = Fraction(1, self.timescale)
        self._plan = SegmentPlan(cfg.segment_seconds, self.rate, self._tick)
        # The encoder's own GOP is longer than a segment so only forced IDRs start one.
        self.gop = max(2, 2 * round(cfg.segment_seconds * float(self.rate)))
        self._frame_ns = round(1e9 / self.rate)
        self._out = _MemoryOutput()
        self._init: bytes | None = None
        self._sequence = 0
        self._last_pts: int | None = None
        self._first_mono_ns: int | None = None
        self._last_wall_ns = 0
        #: Time gaps seen so far: (wall-clock ns of the frame before, length in seconds).
        self.time_gaps: list[tuple[int, float]] = []
        # Frames fed but not yet part of an emitted segment, oldest first.
        self._pending: collections.deque[_PendingFrame] = collections.deque()
        # PTS of frames forced to IDR as segment starts and not yet seen as packets.
        self._boundaries: collections.deque[int] = collections.deque()
        self._force_next = False
        self._finished = False
        self.frames_encoded = 0
        # The frame's own buffer is handed to the encoder, wrapped, not copied: both libx264 and
        # h264_v4l2m2m copy the picture during ``encode`` (FFmpeg keeps no reference once it
        # returns), so the caller may reuse the buffer at once (the frame pool does). A copy
        # into pictures of our own cost a pass over every frame and three frames of memory.
        try:
            self._container: Any = av.open(
                self._out,
                "w",
                format="mp4",
                options={"movflags": MOVFLAGS, "flush_packets": "1"},
            )
            self._stream: Any = self._container.add_stream(cfg.codec.value, rate=self.rate)
        except Exception as exc:  # every FFmpeg failure is translated
            raise _describe_open_failure(cfg.codec, exc) from exc
        ctx = self._stream.codec_context
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = self._tick
        ctx.framerate = self.rate
        ctx.bit_rate = cfg.bitrate_kbps * 1000
        ctx.gop_size = self.gop
        ctx.max_b_frames = 0
        if cfg.codec is EncoderCodec.LIBX264:
            ctx.options = x264_options(cfg, self.gop)
        self._stream.time_base = self._tick
        try:
            ctx.open()
        except Exception as exc:  # every FFmpeg failure is translated
            self._container.close()
            raise _describe_open_failure(cfg.codec, exc) from exc
        log.info(
            "%s: encoder %s %dx%d at %s fps, %d kbit/s, %.3g s segments, GOP %d",
            camera_id,
            cfg.codec.value,
            width,
            height,
            self.rate,
            cfg.bitrate_kbps,
            cfg.segment_seconds,
            self.gop,
        )

    @property
    def init(self) -> bytes | None:
        """The init segment (``ftyp`` + ``moov``) once the muxer has written it."""
        return self._init

    # --- feeding -----------------------------------------------------------------------------

    def encode(self, frame: Frame) -> list[MediaSegment]:
        """Encode one masked frame; return the segments it completed (usually none)."""
        if self._finished:
            raise EncodeError(f"{self.camera_id}: encoding after flush() (start a new encoder)")
        if frame.width != self.width or frame.height != self.height:
            raise EncodeError(
                f"{self.camera_id}: encoding a {frame.width}x{frame.height} frame "
                f"with an encoder opened for {self.width}x{self.height}"
            )
        pts = self._pts_of(frame)
        video = av.VideoFrame.from_numpy_buffer(frame.as_yuv420p(), format="yuv420p")
        video.pts = pts
        video.time_base = self._tick
        video.pict_type = av.video.frame.PictureType.NONE
        if self._plan.starts_segment(pts) or self._force_next:
            self._force_next = False
            video.pict_type = av.video.frame.PictureType.I
            self._boundaries.append(pts)
        self._pending.append(_PendingFrame(pts, frame.index, frame.wall_ns))
        self.frames_encoded += 1
        try:
            packets = self._stream.encode(video)
        except Exception as exc:  # every FFmpeg failure is translated
            raise from_av(exc, f"{self.camera_id}: encoding frame {frame.index}") from exc
        return self._mux(packets)

    def flush(self) -> list[MediaSegment]:
        """Drain the encoder and the muxer; return the last (partial) segment, if any."""
        if self._finished:
            return []
        self._finished = True
        try:
            segments = self._mux(self._stream.encode(None))
            self._container.close()
        except EncodeError:
            raise
        except Exception as exc:  # every FFmpeg failure is translated
            raise from_av(exc, f"{self.camera_id}: encoder flush") from exc
        if self._pending:
            segments.append(self._cut(len(self._pending)))
        leftover = bytes(self._out.buffer)
        if leftover:
            raise EncodeError(
                f"{self.camera_id}: encoder flush left {len(leftover)} bytes outside any box"
            )
        return segments

    def close(self) -> None:
        """Release the encoder without producing the last segment (abort path)."""
        if not self._finished:
            self._finished = True
            try:
                self._container.close()
            except Exception as exc:  # noqa: BLE001 - closing after a failure must not mask it
                log.debug("%s: closing encoder: %s", self.camera_id, exc)

    # --- internals ---------------------------------------------------------------------------

    def _pts_of(self, frame: Frame) -> int:
        """The frame's presentation time in ticks since the session's first frame."""
        if self._first_mono_ns is None:
            self._first_mono_ns = frame.mono_ns
        elapsed = Fraction(frame.mono_ns - self._first_mono_ns, 1_000_000_000)
        pts = round(elapsed / self._tick)
        if self._last_pts is not None:
            if pts <= self._last_pts:
                # Delivered together with the previous frame (or a clock that did not
                # advance): one tick later, so time never runs backwards in the file.
                pts = self._last_pts + 1
            gap_s = float((pts - self._last_pts) * self._tick - 1 / self.rate)
            if gap_s > TIME_GAP_S:
                self.time_gaps.append((self._last_wall_ns, gap_s))
                log.warning(
                    "%s: no frame for %.1f s before frame %d: the recording shows the gap",
                    self.camera_id,
                    gap_s,
                    frame.index,
                )
        self._last_pts = pts
        self._last_wall_ns = frame.wall_ns
        return pts

    def _mux(self, packets: list[Any]) -> list[MediaSegment]:
        segments: list[MediaSegment] = []
        for packet in packets:
            boundary = self._boundaries[0] if self._boundaries else None
            is_cut = False
            starts_segment = False
            if boundary is not None and packet.pts is not None and packet.pts >= boundary:
                self._boundaries.popleft()
                if packet.pts == boundary and packet.is_keyframe:
                    starts_segment = True
                    is_cut = bool(self._pending) and self._pending[0].pts < boundary
                else:
                    # The encoder ignored the forced IDR: this segment runs on and the next
                    # frame is asked to be one instead.
                    log.warning(
                        "%s: encoder did not start a segment with an IDR frame at pts %d",
                        self.camera_id,
                        boundary,
                    )
                    self._force_next = True
            if self._signer is not None:
                packet = self._sign(packet, self._signer, starts_segment)
            try:
                self._container.mux(packet)
            except Exception as exc:  # every FFmpeg failure is translated
                raise from_av(exc, f"{self.camera_id}: muxing encoded packet") from exc
            if is_cut:
                assert boundary is not None
                count = sum(1 for f in self._pending if f.pts < boundary)
                segments.append(self._cut(count))
        return segments

    def _sign(self, packet: Any, signer: MediaSigner, starts_segment: bool) -> Any:
        """The packet with the signing SEIs it must carry in front of its own NAL units."""
        data = bytes(packet)
        try:
            units = list(iter_units(data))
        except IntegrityError as exc:
            raise EncodeError(f"{self.camera_id}: encoder packet unreadable: {exc}") from None
        wall_ns = next(
            (f.wall_ns for f in self._pending if f.pts == packet.pts), self._last_wall_ns
        )
        extra = signer.access_unit(units, wall_ns, segment_start=starts_segment)
        if not extra:
            return packet
        signed = av.Packet(with_seis(units, extra))
        signed.pts, signed.dts, signed.duration = packet.pts, packet.dts, packet.duration
        signed.time_base = packet.time_base
        signed.is_keyframe = packet.is_keyframe
        signed.stream = packet.stream
        return signed

    def _take_boxes(self) -> bytes:
        """Move complete init boxes to :attr:`init`; return the complete media boxes."""
        buf = self._out.buffer
        boxes, end = iter_boxes(buf)
        media = bytearray()
        init = bytearray()
        for box in boxes:
            chunk = buf[box.offset : box.offset + box.size]
            if box.type in INIT_BOX_TYPES:
                init += chunk
            else:
                media += chunk
        del buf[:end]
        if init:
            if self._init is not None:
                raise EncodeError(f"{self.camera_id}: muxer wrote a second init segment")
            self._init = bytes(init)
        return bytes(media)

    def _cut(self, frame_count: int) -> MediaSegment:
        media = self._take_boxes()
        if self._init is None:
            raise EncodeError(f"{self.camera_id}: muxer wrote media before the init segment")
        if not media.startswith(b"moof", 4) and not media.startswith(b"styp", 4):
            raise EncodeError(
                f"{self.camera_id}: media segment {self._sequence} does not start with a "
                "moof box (muxer output out of step with the segment plan)"
            )
        frames = [self._pending.popleft() for _ in range(frame_count)]
        segment = MediaSegment(
            camera_id=self.camera_id,
            sequence=self._sequence,
            init=self._init,
            media=media,
            start_wall_ns=frames[0].wall_ns,
            end_wall_ns=frames[-1].wall_ns + self._frame_ns,
            frame_count=frame_count,
            first_frame_index=frames[0].index,
        )
        self._sequence += 1
        log.debug(
            "%s: segment %d: %d frames, %d bytes",
            self.camera_id,
            segment.sequence,
            frame_count,
            len(media),
        )
        return segment

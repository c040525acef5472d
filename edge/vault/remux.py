"""Join decrypted segments into one playable MP4 by remuxing: packets are copied, never
re-encoded, so an evidence clip keeps the recorded quality bit for bit.

Each segment is ``init || media`` (a complete fragmented MP4) with the wall-clock time of its
first frame. Times are true times: a gap between segments, or inside one, stays a gap of its
real length in the clip, never closed up. Within a recording session the segments' own
timestamps place them (they come from the capture clock); a segment whose timeline restarts
(a new session after a crash, a restart or an encoder restart) is placed by its wall-clock
start, never before the end of what precedes it (a wall clock stepped back cannot make time
run backwards). Gaps longer than :data:`GAP_REPORT_S` are reported.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container

from ..errors import EdgeError, VaultError, from_av
from ..video import mediasigning as ms

#: A pause between two frames of the clip longer than this is reported as a time gap.
GAP_REPORT_S = Fraction(1)


@dataclass(frozen=True, slots=True)
class TimeGap:
    """Nothing was recorded for ``seconds`` after ``after_wall_ns`` (shown as such in the clip)."""

    after_wall_ns: int
    seconds: float


def closing_seis(init: bytes, media: bytes) -> list[bytes]:
    """The signed ONVIF Media Signing SEIs (not certificate SEIs) in the first access unit of a
    segment (``init || media``): what signs the GOP before it."""
    try:
        with av.open(io.BytesIO(init + media), mode="r", format="mp4") as src:
            stream = src.streams.video[0]
            first = next((p for p in src.demux(stream) if p.size > 0), None)
            size = _length_size(stream.codec_context.extradata)
            if first is None:
                return []
            units = ms.length_prefixed_units(bytes(first), size)
    except (IndexError, av.error.FFmpegError) as exc:
        raise VaultError(f"the segment after the range is unreadable: {exc}") from None
    out = []
    for unit in units:
        sei = ms.parse_sei(unit)
        if sei is not None and sei.signed and not sei.certificate_sei:
            out.append(unit)
    return out


def _length_size(extradata: bytes | None) -> int:
    """NAL length field size of an MP4 H.264 track (from its avcC record)."""
    if extradata and len(extradata) > 4 and extradata[0] == 1:
        return (extradata[4] & 0x03) + 1
    return 4


def _before_picture(packet: av.Packet[Any], units: Sequence[bytes], size: int) -> av.Packet[Any]:
    """``packet`` (a length-prefixed access unit) with ``units`` put in front of its first
    slice: an SEI precedes the picture in an H.264 access unit."""
    own = ms.length_prefixed_units(bytes(packet), size)
    at = next(
        (n for n, u in enumerate(own) if ms.nal_type(u) in (ms.NAL_SLICE, ms.NAL_IDR)), len(own)
    )
    ordered = [*own[:at], *units, *own[at:]]
    out = av.Packet(b"".join(len(u).to_bytes(size, "big") + u for u in ordered))
    out.dts, out.pts, out.duration = packet.dts, packet.pts, packet.duration
    out.time_base = packet.time_base
    out.is_keyframe = packet.is_keyframe
    out.stream = packet.stream
    return out


def remux(
    segments: Iterable[tuple[bytes, bytes, int]],
    out_path: Path,
    gaps: list[TimeGap] | None = None,
    closing: Sequence[bytes] = (),
) -> int:
    """Write ``out_path`` (MP4) from (init, media, start_wall_ns) triples, in recording order;
    returns the number of video packets and appends the time gaps found to ``gaps``.

    ``closing``: NAL units (the Media Signing SEI that signs the clip's last GOP, taken from
    the segment after it) put into the last access unit, in front of its picture, so that the
    clip carries the signature of everything it shows; no picture is added."""
    out: av.container.OutputContainer | None = None
    out_stream = None
    size = 4
    held: av.Packet[Any] | None = None  # the last packet, muxed once the next one comes
    origin_wall_ns: int | None = None
    session_base = Fraction(0)  # clip time (s) of timestamp 0 of the current session
    session_end: Fraction | None = None  # end of the previous segment in its own timeline (s)
    clip_end = Fraction(0)  # end of the last packet written, clip time (s)
    count = 0
    try:
        for n, (init, media, start_wall_ns) in enumerate(segments):
            with av.open(io.BytesIO(init + media), mode="r", format="mp4") as src:
                if not src.streams.video:
                    raise EdgeError(f"segment {n} holds no video stream")
                in_stream = src.streams.video[0]
                if out is None:
                    out = av.open(str(out_path), mode="w", format="mp4")
                    out_stream = out.add_stream_from_template(in_stream)
                    size = _length_size(in_stream.codec_context.extradata)
                assert out_stream is not None
                tb = in_stream.time_base
                if tb is None:
                    raise EdgeError(f"segment {n}: stream without a time base")
                packets = [p for p in src.demux(in_stream) if p.dts is not None and p.size > 0]
                if not packets:
                    continue
                first = min(int(p.dts) for p in packets if p.dts is not None) * tb
                if origin_wall_ns is None:
                    origin_wall_ns = start_wall_ns
                    session_base = -first
                elif session_end is None or first < session_end:
                    # The timeline restarted: a new session, placed by its wall-clock start.
                    at = Fraction(start_wall_ns - origin_wall_ns, 1_000_000_000)
                    session_base = max(at, clip_end) - first
                    session_end = None
                for p in packets:
                    assert p.dts is not None
                    dts = int(p.dts) * tb
                    pts = (int(p.pts) if p.pts is not None else int(p.dts)) * tb
                    dur = int(p.duration or 0) * tb
                    out_dts = session_base + dts
                    if count and out_dts - clip_end > GAP_REPORT_S and gaps is not None:
                        gaps.append(
                            TimeGap(
                                origin_wall_ns + round(clip_end * 1_000_000_000),
                                float(out_dts - clip_end),
                            )
                        )
                    clip_end = max(clip_end, out_dts + dur)
                    session_end = max(session_end or Fraction(0), dts + dur)
                    p.dts = round(out_dts / tb)
                    p.pts = round((session_base + pts) / tb)
                    p.time_base = tb
                    p.stream = out_stream
                    if held is not None:
                        out.mux(held)
                    held = p
                    count += 1
        if out is not None and held is not None:
            out.mux(_before_picture(held, closing, size) if closing else held)
    except av.error.FFmpegError as exc:
        raise VaultError(str(from_av(exc, f"remuxing into {out_path}"))) from None
    finally:
        if out is not None:
            out.close()
    if out is None:
        raise EdgeError("nothing to remux: no segment")
    return count

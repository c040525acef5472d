"""Join decrypted segments into one playable MP4 by remuxing: packets are copied, never
re-encoded, so an evidence clip keeps the recorded quality bit for bit.

Each segment is ``init || media`` (a complete fragmented MP4). Timestamps are made continuous
across segments (each segment's first decode time follows the previous segment's end), which
also bridges recording sessions whose encoder clocks restarted at zero.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import av.container

from ..errors import EdgeError, VaultError, from_av


def remux(segments: Iterable[tuple[bytes, bytes]], out_path: Path) -> int:
    """Write ``out_path`` (MP4) from (init, media) pairs; returns the number of video packets."""
    out: av.container.OutputContainer | None = None
    out_stream = None
    offset = Fraction(0)  # seconds already written
    count = 0
    try:
        for n, (init, media) in enumerate(segments):
            with av.open(io.BytesIO(init + media), mode="r", format="mp4") as src:
                if not src.streams.video:
                    raise EdgeError(f"segment {n} holds no video stream")
                in_stream = src.streams.video[0]
                if out is None:
                    out = av.open(str(out_path), mode="w", format="mp4")
                    out_stream = out.add_stream_from_template(in_stream)
                assert out_stream is not None
                tb = in_stream.time_base
                if tb is None:
                    raise EdgeError(f"segment {n}: stream without a time base")
                packets = [p for p in src.demux(in_stream) if p.dts is not None and p.size > 0]
                if not packets:
                    continue
                first = min(int(p.dts) for p in packets if p.dts is not None)
                end = first
                for p in packets:
                    assert p.dts is not None
                    dts = int(p.dts)
                    pts = int(p.pts) if p.pts is not None else dts
                    dur = int(p.duration or 0)
                    end = max(end, dts + dur)
                    base = offset / tb  # offset in this stream's ticks
                    p.dts = int(base + dts - first)
                    p.pts = int(base + pts - first)
                    p.time_base = tb
                    p.stream = out_stream
                    out.mux(p)
                    count += 1
                offset += (end - first) * tb
    except av.error.FFmpegError as exc:
        raise VaultError(str(from_av(exc, f"remuxing into {out_path}"))) from None
    finally:
        if out is not None:
            out.close()
    if out is None:
        raise EdgeError("nothing to remux: no segment")
    return count

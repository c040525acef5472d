"""The Raspberry Pi 4 hardware H.264 encoder (h264_v4l2m2m) through the recorder's encoder.

Skips off a Raspberry Pi, and on a Pi without the V4L2 memory-to-memory encoder (the Pi 5 has
none: configure libx264 there). Checks what the fast tier checks for libx264: every segment
decodes on its own, starts on an IDR picture, and the whole recording keeps every frame; and
that 1080p encodes faster than real time.
"""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest

from edge.config import EncoderCodec, EncoderConfig
from edge.errors import EncodeError
from edge.frames import Frame
from edge.video.base import MediaSegment
from edge.video.encoder import SegmentEncoder

WIDTH, HEIGHT, FPS = 1920, 1080, 25.0
SECONDS = 6


def frames(count: int) -> list[Frame]:
    rng = np.random.default_rng(3)
    background = rng.integers(30, 220, size=(HEIGHT, WIDTH), dtype=np.uint8)
    out = []
    for i in range(count):
        frame = Frame.blank(WIDTH, HEIGHT, index=i, mono_ns=i * 40_000_000, wall_ns=i * 40_000_000)
        frame.y[...] = np.roll(background, 4 * i, axis=1)
        out.append(frame)
    return out


def decoded_frames(data: bytes, path: Path) -> tuple[int, bool]:
    """Frames decoded and whether the first one is a keyframe (PyAV, software decoder)."""
    path.write_bytes(data)
    count = 0
    first_key = False
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if count == 0:
                first_key = bool(frame.key_frame)
            count += 1
    return count, first_key


def test_v4l2m2m_segments(raspberry_pi: None, tmp_path: Path) -> None:
    cfg = EncoderConfig(codec=EncoderCodec.V4L2M2M, segment_seconds=2.0)
    try:
        encoder = SegmentEncoder("cam1", WIDTH, HEIGHT, FPS, cfg)
    except EncodeError as exc:
        pytest.skip(f"no hardware H.264 encoder on this Pi: {exc}")
    inputs = frames(int(SECONDS * FPS))
    segments: list[MediaSegment] = []
    start = time.monotonic()
    for frame in inputs:
        segments += encoder.encode(frame)
    segments += encoder.flush()
    elapsed = time.monotonic() - start
    assert elapsed < SECONDS, f"1080p{FPS:g} encoded slower than real time ({elapsed:.1f} s)"
    assert [s.sequence for s in segments] == list(range(len(segments)))
    assert len(segments) == SECONDS // 2
    total = 0
    for seg in segments:
        count, first_key = decoded_frames(seg.init + seg.media, tmp_path / f"{seg.sequence}.mp4")
        assert count == seg.frame_count
        assert first_key, f"segment {seg.sequence} does not start on a keyframe"
        total += count
    assert total == len(inputs)

"""SegmentEncoder: H.264 CMAF segments judged by ffprobe and an independent NAL-level check."""

from __future__ import annotations

import itertools
import re
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.video.frame
import numpy as np
import pytest

from edge.config import EncoderCodec, EncoderConfig
from edge.errors import EncodeError
from edge.frames import Frame
from edge.video.base import MediaSegment
from edge.video.cmaf import box_types
from edge.video.encoder import SegmentEncoder

from .conftest import not_applicable, tool
from .video_support import (
    WALL0,
    first_packet_nal_types,
    moving_frames,
    probe_packets,
    probe_stream,
)

IDR = 5


def record(
    width: int,
    height: int,
    fps: float,
    count: int,
    cfg: EncoderConfig,
    *,
    first_index: int = 0,
    skip: frozenset[int] = frozenset(),
) -> list[MediaSegment]:
    encoder = SegmentEncoder("cam1", width, height, fps, cfg)
    segments: list[MediaSegment] = []
    for frame in moving_frames(width, height, count, fps, first_index=first_index, skip=skip):
        segments += encoder.encode(frame)
    segments += encoder.flush()
    return segments


CASES = [
    # width, height, fps, segment_seconds, frames
    (320, 240, 25.0, 2.0, 130),
    (640, 360, 25.0, 1.0, 60),
    (98, 66, 12.5, 1.0, 40),  # odd settings: tiny, not a multiple of 16, fractional fps
]


@pytest.mark.parametrize(("width", "height", "fps", "seconds", "count"), CASES)
def test_segments_are_valid_cmaf(
    tmp_path: Path, width: int, height: int, fps: float, seconds: float, count: int
) -> None:
    segments = record(width, height, fps, count, EncoderConfig(segment_seconds=seconds))
    frame_s = 1 / fps

    # One init segment for the whole session, media segments of moof/mdat only.
    assert len({s.init for s in segments}) == 1
    assert box_types(segments[0].init) == ["ftyp", "moov"]
    assert [s.sequence for s in segments] == list(range(len(segments)))
    assert sum(s.frame_count for s in segments) == count

    # The whole recording: ffprobe accepts it with the right codec, size, rate and frame count.
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(segments[0].init + b"".join(s.media for s in segments))
    stream = probe_stream(whole)
    assert stream["codec_name"] == "h264"
    assert (stream["width"], stream["height"]) == (width, height)
    assert Fraction(stream["r_frame_rate"]) == Fraction(fps)
    assert int(stream["nb_read_frames"]) == count
    keyframes = [p for p in probe_packets(whole) if "K" in p["flags"]]
    assert len(keyframes) == len(segments), "exactly one keyframe per segment"

    expected_index = 0
    for seg in segments:
        assert box_types(seg.media)[:2] == ["moof", "mdat"]
        single = tmp_path / f"seg{seg.sequence}.mp4"
        single.write_bytes(seg.init + seg.media)
        info = probe_stream(single)
        assert int(info["nb_read_frames"]) == seg.frame_count
        packets = probe_packets(single)
        assert len(packets) == seg.frame_count
        assert "K" in packets[0]["flags"], f"segment {seg.sequence} starts on a non-keyframe"
        assert all("K" not in p["flags"] for p in packets[1:])
        assert IDR in first_packet_nal_types(single), "segment must start with an IDR picture"
        # Media time of the first frame sits on the segment grid.
        first_t = float(packets[0]["pts_time"])
        assert abs(first_t - seg.sequence * seconds) <= frame_s / 2 + 1e-6
        # Wall-clock: the frames' own times.
        assert seg.first_frame_index == expected_index
        assert seg.start_wall_ns == WALL0 + round(expected_index * 1e9 / fps)
        last = expected_index + seg.frame_count - 1
        assert seg.end_wall_ns == WALL0 + round(last * 1e9 / fps) + round(1e9 / fps)
        expected_index += seg.frame_count

    # Durations: every full segment within one frame of the target, the last one partial.
    for seg in segments[:-1]:
        assert abs(seg.frame_count / fps - seconds) <= frame_s + 1e-9
        assert abs(seg.duration_s - seconds) <= frame_s + 1e-6
    assert segments[-1].frame_count / fps <= seconds + frame_s
    # Consecutive segments leave no hole in wall-clock time (frames are regular here).
    for a, b in itertools.pairwise(segments):
        assert abs(b.start_wall_ns - a.end_wall_ns) <= 1


def test_flush_returns_the_partial_last_segment() -> None:
    encoder = SegmentEncoder("cam1", 160, 120, 25, EncoderConfig(segment_seconds=1.0))
    segments: list[MediaSegment] = []
    for frame in moving_frames(160, 120, 35, 25):
        segments += encoder.encode(frame)
    assert [s.frame_count for s in segments] == [25], "first second closed when 26th frame came"
    last = encoder.flush()
    assert [(s.sequence, s.frame_count, s.first_frame_index) for s in last] == [(1, 10, 25)]
    assert encoder.flush() == []
    with pytest.raises(EncodeError, match="after flush"):
        encoder.encode(Frame.blank(160, 120, index=99))


def test_flush_without_frames_gives_nothing() -> None:
    encoder = SegmentEncoder("cam1", 160, 120, 25, EncoderConfig())
    assert encoder.flush() == []


def test_dropped_frames_keep_real_time_and_segment_grid(tmp_path: Path) -> None:
    fps = 25.0
    dropped = frozenset({*range(20, 30), 47, 48, *range(55, 80)})  # 80..: one whole second gone
    segments = record(
        320, 240, fps, 125, EncoderConfig(segment_seconds=1.0), first_index=1000, skip=dropped
    )
    assert sum(s.frame_count for s in segments) == 125 - len(dropped)
    assert [s.sequence for s in segments] == list(range(len(segments)))
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(segments[0].init + b"".join(s.media for s in segments))
    packets = probe_packets(whole)
    times = [round(float(p["pts_time"]) * fps) for p in packets]
    assert times == [i for i in range(125) if i not in dropped], "gaps keep their length"
    starts = [round(float(p["pts_time"]) * fps) for p in packets if "K" in p["flags"]]
    assert starts == [0, 30, 50, 80, 100], "first frame past each grid line opens a segment"
    assert [s.first_frame_index - 1000 for s in segments] == starts


def test_x264_settings_follow_the_configuration(tmp_path: Path) -> None:
    # x264 writes its settings into the stream (an SEI message): read them from the output.
    cfg = EncoderConfig(preset="ultrafast", bitrate_kbps=700, segment_seconds=1.5)
    segments = record(320, 240, 20, 10, cfg)
    sei = re.search(rb"options: ([^\x00]+)", segments[0].media)
    assert sei is not None
    opts = dict(o.split("=", 1) for o in sei.group(1).decode().split() if "=" in o)
    assert opts["bframes"] == "0"
    assert opts["scenecut"] == "0"
    assert opts["keyint"] == "60"  # twice the 30-frame segment: only forced IDRs start one
    assert opts["bitrate"] == "700"
    assert opts["cabac"] == "0"  # ultrafast


def test_wrong_frame_size_is_refused() -> None:
    encoder = SegmentEncoder("cam1", 160, 120, 25, EncoderConfig())
    with pytest.raises(EncodeError, match="320x240"):
        encoder.encode(Frame.blank(320, 240))
    encoder.close()


def test_v4l2m2m_is_chosen_from_config_and_fails_clearly_here() -> None:
    if list(Path("/dev").glob("video*")):
        not_applicable("this machine has V4L2 devices; hw-tests/test_encoder_hw.py covers them")
    cfg = EncoderConfig(codec=EncoderCodec.V4L2M2M)
    with pytest.raises(EncodeError) as info:
        SegmentEncoder("cam1", 320, 240, 25, cfg)
    message = str(info.value)
    assert "h264_v4l2m2m" in message
    assert "no /dev/video*" in message
    assert "libx264" in message  # tells the user what to configure instead


@pytest.mark.parametrize(("width", "height"), [(320, 240), (98, 66)])
def test_decoded_pictures_are_the_frames_fed_in_order(
    tmp_path: Path, width: int, height: int
) -> None:
    # Input pictures are reused inside the encoder: each decoded picture must still be its own
    # frame, not a later one written into a buffer the encoder had not finished with.
    fed = [f.copy() for f in moving_frames(width, height, 30, 25)]
    encoder = SegmentEncoder("cam1", width, height, 25, EncoderConfig(bitrate_kbps=4000))
    segments: list[MediaSegment] = []
    for frame in fed:
        segments += encoder.encode(frame)
    segments += encoder.flush()
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(segments[0].init + b"".join(s.media for s in segments))
    raw = subprocess.run(
        [
            tool("ffmpeg"),
            "-v",
            "error",
            "-i",
            str(whole),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-",
        ],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    size = width * height * 3 // 2
    assert len(raw) == size * len(fed)
    for i in range(len(fed)):
        luma = np.frombuffer(raw, np.uint8, count=width * height, offset=i * size)
        luma = luma.reshape(height, width).astype(np.int32)
        errors = [np.abs(luma - f.y.astype(np.int32)).mean() for f in fed]
        assert int(np.argmin(errors)) == i, f"decoded picture {i} is not frame {i}"
        assert errors[i] < 3.0


def test_one_buffer_reused_for_every_frame_still_records_each_frame(tmp_path: Path) -> None:
    """The encoder takes the frame's own buffer (no copy of its own), and the frame pool
    refills that buffer as soon as ``encode`` returns: each frame must still be recorded as
    it was, not as the next one written over it."""
    width, height = 320, 240
    fed = [f.copy() for f in moving_frames(width, height, 30, 25)]
    encoder = SegmentEncoder("cam1", width, height, 25, EncoderConfig(bitrate_kbps=4000))
    buffer = Frame.blank(width, height)
    segments: list[MediaSegment] = []
    for frame in fed:
        np.copyto(buffer.data, frame.data)
        buffer.index, buffer.mono_ns, buffer.wall_ns = frame.index, frame.mono_ns, frame.wall_ns
        segments += encoder.encode(buffer)
        buffer.data.fill(0)  # the pool hands the buffer to the next picture at once
    segments += encoder.flush()
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(segments[0].init + b"".join(s.media for s in segments))
    with av.open(str(whole)) as container:
        decoded = [p.to_ndarray()[:height] for p in container.decode(video=0)]  # luma rows
    assert len(decoded) == len(fed)
    for i, luma in enumerate(decoded):
        errors = [np.abs(luma.astype(np.int32) - f.y.astype(np.int32)).mean() for f in fed]
        assert int(np.argmin(errors)) == i, f"decoded picture {i} is not frame {i}"
        assert errors[i] < 3.0


class _IgnoresForcedKeyframes:
    """Fault injection: a stream whose encoder drops the forced-IDR request at some pts."""

    def __init__(self, stream: Any, ignore: set[int]) -> None:
        self.stream = stream
        self.ignore = ignore

    def encode(self, frame: av.VideoFrame | None) -> Any:
        if frame is not None and frame.pts in self.ignore:
            frame.pict_type = av.video.frame.PictureType.NONE
        return self.stream.encode(frame)


def test_an_ignored_idr_request_moves_the_cut_to_the_next_frame(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = SegmentEncoder("cam1", 160, 120, 25, EncoderConfig(segment_seconds=1.0))
    one_second = encoder.timescale  # timestamps are in ticks of the track's timescale
    encoder._stream = _IgnoresForcedKeyframes(encoder._stream, {one_second})  # frame 25
    segments: list[MediaSegment] = []
    for frame in moving_frames(160, 120, 60, 25):
        segments += encoder.encode(frame)
    segments += encoder.flush()
    assert [s.first_frame_index for s in segments] == [0, 26, 50]
    assert f"did not start a segment with an IDR frame at pts {one_second}" in caplog.text
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(segments[0].init + b"".join(s.media for s in segments))
    assert int(probe_stream(whole)["nb_read_frames"]) == 60
    for seg in segments:
        single = tmp_path / f"{seg.sequence}.mp4"
        single.write_bytes(seg.init + seg.media)
        assert "K" in probe_packets(single)[0]["flags"]


def test_camera_outage_stays_a_gap_of_its_true_length(tmp_path: Path) -> None:
    """Frames keep counting straight across an outage (the capture loop renumbers them after a
    reconnection); their capture times do not. The file must show the 42 s the camera was away,
    within a frame, and no segment may span it."""
    fps, outage_s = 25.0, 42.0
    encoder = SegmentEncoder("cam1", 160, 120, fps, EncoderConfig(segment_seconds=1.0))
    segments: list[MediaSegment] = []
    captured_at: list[float] = []  # seconds since the first frame, from the capture clock
    for i, frame in enumerate(moving_frames(160, 120, 60, fps)):
        if i >= 30:  # the camera came back: the index goes on, the clock has moved on
            frame.mono_ns += round(outage_s * 1e9)
            frame.wall_ns += round(outage_s * 1e9)
        captured_at.append((frame.mono_ns - 5_000) / 1e9)
        segments += encoder.encode(frame)
    segments += encoder.flush()
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(segments[0].init + b"".join(s.media for s in segments))
    times = [float(p["pts_time"]) for p in probe_packets(whole)]
    assert len(times) == 60
    assert all(abs(t - c) <= 1 / fps for t, c in zip(times, captured_at, strict=True))
    assert times[30] - times[29] == pytest.approx(outage_s + 1 / fps, abs=1 / fps)
    assert all(s.duration_s < 2.0 for s in segments), "no segment spans the outage"
    assert any(s.first_frame_index == 30 for s in segments), "the return opens a segment"
    [(before_ns, gap_s)] = encoder.time_gaps
    assert before_ns == WALL0 + round(29 * 1e9 / fps) and gap_s == pytest.approx(outage_s, abs=0.05)


def test_a_burst_of_frames_is_not_pushed_back_onto_later_frames(tmp_path: Path) -> None:
    """Frames delivered together (queued during a network stall) keep their order a tick apart;
    the frames after the burst are on their own capture times again: no drift builds up."""
    fps = 25.0
    encoder = SegmentEncoder("cam1", 160, 120, fps, EncoderConfig(segment_seconds=1.0))
    segments: list[MediaSegment] = []
    for i, frame in enumerate(moving_frames(160, 120, 50, fps)):
        if 10 <= i < 15:
            frame.mono_ns = 5_000 + round(15 * 1e9 / fps)  # five frames delivered at once
        segments += encoder.encode(frame)
    segments += encoder.flush()
    whole = tmp_path / "whole.mp4"
    whole.write_bytes(segments[0].init + b"".join(s.media for s in segments))
    times = [float(p["pts_time"]) for p in probe_packets(whole)]
    assert len(times) == 50 and times == sorted(set(times))
    on_time = [*range(10), *range(16, 50)]
    assert all(abs(times[i] - i / fps) < 1e-3 for i in on_time), "no drift after the burst"
    assert all(abs(times[i] - 15 / fps) < 1e-3 for i in range(10, 16))
    assert encoder.time_gaps == []

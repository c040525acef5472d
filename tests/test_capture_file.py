"""File sources through PyAV, on clips the ``ffmpeg`` CLI makes in the test; the CLI's own
decode and scale is the reference the converted frames are compared against."""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edge.capture import open_source
from edge.capture.loop import CaptureLoop, CaptureState
from edge.capture.pyav import PyAVSource, redact_url
from edge.config import CameraConfig
from edge.errors import CaptureError
from edge.frames import Frame, i420_size

from .conftest import tool

# name: (size, rate, seconds, pixel format, codec arguments, container)
CLIPS = {
    "h264.mp4": ("320x240", 25, 2, "yuv420p", ["-c:v", "libx264", "-g", "25"], "mp4"),
    "h264-422.mkv": ("352x288", 30, 1, "yuv422p", ["-c:v", "libx264"], "matroska"),
    "mjpeg.avi": ("176x144", 10, 1, "yuvj420p", ["-c:v", "mjpeg"], "avi"),
    "rgb.mkv": ("160x120", 25, 1, "bgr0", ["-c:v", "ffv1"], "matroska"),
    "gray.mkv": ("200x150", 25, 1, "gray", ["-c:v", "ffv1"], "matroska"),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ffmpeg = tool("ffmpeg")
    folder = tmp_path_factory.mktemp("clips")
    for name, (size, rate, seconds, pix_fmt, codec, fmt) in CLIPS.items():
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi",
             "-i", f"testsrc2=size={size}:rate={rate}", "-t", str(seconds),
             "-pix_fmt", pix_fmt, *codec, "-f", fmt, "-y", str(folder / name)],
            check=True,
        )  # fmt: skip
    return folder


def _read_all(source: PyAVSource, limit: int = 10_000) -> list[Frame]:
    source.open()
    frames: list[Frame] = []
    try:
        while len(frames) < limit and (frame := source.read()) is not None:
            frames.append(frame)
    finally:
        source.close()
    return frames


def _reference(path: Path, width: int, height: int) -> np.ndarray:
    """The clip decoded and scaled to limited-range I420 by the ffmpeg CLI, a row per frame."""
    raw = subprocess.run(
        [tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-i", str(path),
         "-vf", f"scale={width}:{height}:flags=bicubic:out_range=tv", "-pix_fmt", "yuv420p",
         "-f", "rawvideo", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, i420_size(width, height))


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_frames_match_ffmpeg_at_the_configured_size(clips: Path, name: str) -> None:
    _size, rate, seconds, *_ = CLIPS[name]
    source = PyAVSource(f"file:{clips / name}", 128, 96, rate, realtime=False)
    frames = _read_all(source)
    assert len(frames) == rate * seconds
    assert [f.index for f in frames] == list(range(len(frames)))
    reference = _reference(clips / name, 128, 96)
    assert len(reference) == len(frames)
    for frame, expected in zip(frames, reference, strict=True):
        assert (frame.width, frame.height, frame.data.size) == (128, 96, i420_size(128, 96))
        diff = np.abs(frame.data.astype(int) - expected.astype(int))
        # Same picture and levels; the CLI's scaler flags round chroma a little differently.
        # (A missed full-to-limited range conversion costs 5 to 8 on average.)
        assert diff.mean() < 1.5, f"{name} frame {frame.index} differs from ffmpeg's"


def test_retimed_to_the_configured_rate(clips: Path) -> None:
    # 10 fps clip read as a 25 fps camera: 25 frames for its second, pictures repeated.
    slow = _read_all(PyAVSource(f"file:{clips / 'mjpeg.avi'}", 176, 144, 25, realtime=False))
    assert len(slow) == 25
    distinct = {f.data.tobytes() for f in slow}
    assert len(distinct) == 10
    # 30 fps clip read at 25 fps: pictures dropped, one second still lasts one second.
    fast = _read_all(PyAVSource(f"file:{clips / 'h264-422.mkv'}", 176, 144, 25, realtime=False))
    assert len(fast) == 25
    assert len({f.data.tobytes() for f in fast}) == 25


def test_repeated_pictures_are_independent_buffers(clips: Path) -> None:
    source = PyAVSource(f"file:{clips / 'mjpeg.avi'}", 176, 144, 25, realtime=False)
    source.open()
    first = source.read()
    assert first is not None
    original = first.data.copy()
    first.y[...] = 0  # what the privacy masker does, in place
    second = source.read()  # the same picture again (10 fps shown at 25 fps)
    assert second is not None and np.array_equal(second.data, original)
    source.close()


def test_loop_plays_the_file_again(clips: Path) -> None:
    source = PyAVSource(f"file:{clips / 'h264.mp4'}", 160, 120, 25, loop=True, realtime=False)
    frames = _read_all(source, limit=130)
    assert len(frames) == 130
    assert [f.index for f in frames] == list(range(130))
    for k in (0, 17, 49):
        assert np.array_equal(frames[k].data, frames[k + 50].data)
    assert np.array_equal(frames[17].data, frames[117].data)


def test_realtime_pacing_and_timestamps(clips: Path) -> None:
    source = PyAVSource(f"file:{clips / 'mjpeg.avi'}", 176, 144, 20, realtime=True)
    wall_before = time.time_ns()
    started = time.monotonic()
    frames = _read_all(source)
    elapsed = time.monotonic() - started
    assert len(frames) == 20
    # 19 intervals of 50 ms: never faster than real time. No upper bound on the total: a loaded
    # machine may be late, and how fast capture keeps up is `edgectl bench capture`'s figure.
    assert elapsed >= 0.8
    intervals = np.diff([f.mono_ns for f in frames]) / 1e6
    assert 35 <= float(np.median(intervals)) <= 70
    assert all(b.wall_ns > a.wall_ns for a, b in itertools.pairwise(frames))
    assert wall_before <= frames[0].wall_ns <= time.time_ns()


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    source = PyAVSource(f"file:{path}", 160, 120, 25, realtime=False)
    with pytest.raises(CaptureError) as info:
        _read_all(source)
    assert str(path) in str(info.value)
    assert info.value.transient is False, "a broken file does not mend itself"


def test_truncated_file_is_a_clear_error(clips: Path, tmp_path: Path) -> None:
    whole = (clips / "h264.mp4").read_bytes()  # moov at the end: the index is cut off
    path = tmp_path / "truncated.mp4"
    path.write_bytes(whole[: len(whole) // 2])
    source = PyAVSource(f"file:{path}", 160, 120, 25, realtime=False)
    with pytest.raises(CaptureError) as info:
        source.open()
    assert "opening file" in str(info.value) and str(path) in str(info.value)
    assert info.value.transient is False
    source.close()
    source.close()  # twice is fine


def test_missing_file(tmp_path: Path) -> None:
    source = PyAVSource(f"file:{tmp_path / 'absent.mp4'}", 160, 120, 25)
    with pytest.raises(CaptureError, match="No such file"):
        source.open()


def test_capture_loop_ends_with_the_file(clips: Path) -> None:
    cam = CameraConfig(source=f"file:{clips / 'h264.mp4'}", width=160, height=120, fps=25)
    source = open_source(cam, realtime=False)
    assert isinstance(source, PyAVSource)
    seen: list[int] = []
    loop = CaptureLoop(source, lambda f: seen.append(f.index), name="cam1")
    loop.run()
    assert loop.state is CaptureState.ENDED
    assert seen == list(range(50)) and loop.stats().frames_in == 50


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/Streaming/101?token=abc#x") == (
        "rtsp://10.0.0.5:554/Streaming/101"
    )
    assert redact_url("rtsps://[fe80::1]/live") == "rtsps://[fe80::1]/live"
    source = PyAVSource("rtsp://admin:s3cret@cam.local/live?password=hunter2", 64, 64, 25)
    assert "s3cret" not in source.description and "hunter2" not in source.description
    assert source.description == "RTSP camera rtsp://cam.local/live"
    with pytest.raises(ValueError, match="not a PyAV source"):
        PyAVSource("http://user:pw@x/", 64, 64, 25)

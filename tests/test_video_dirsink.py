"""DirectorySink: layout, atomic writes, crash leftovers, playback with the ffmpeg CLI."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from edge.config import EncoderConfig
from edge.errors import VaultError
from edge.video.base import MediaSegment
from edge.video.dirsink import DirectorySink, atomic_write, list_segments
from edge.video.encoder import SegmentEncoder

from .conftest import tool
from .video_support import moving_frames, probe_stream


def encode(
    count: int, *, width: int = 160, height: int = 120, fps: float = 25
) -> list[MediaSegment]:
    encoder = SegmentEncoder("cam1", width, height, fps, EncoderConfig(segment_seconds=1.0))
    out: list[MediaSegment] = []
    for frame in moving_frames(width, height, count, fps):
        out += encoder.encode(frame)
    return out + encoder.flush()


@pytest.fixture(scope="module")
def segments() -> list[MediaSegment]:
    return encode(70)  # 1 s + 1 s + 0.8 s


def decode_with_ffmpeg(*parts: Path) -> None:
    data = b"".join(p.read_bytes() for p in parts)
    subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-xerror", "-f", "mp4", "-i", "pipe:", "-f", "null", "-"],
        input=data,
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_layout_sidecars_and_playback(tmp_path: Path, segments: list[MediaSegment]) -> None:
    sink = DirectorySink(tmp_path)
    for seg in segments:
        sink.write(seg)
    sink.close()
    cam = tmp_path / "cam1"
    files = list_segments(cam)
    # WALL0 is 2026-07-25 17:20 UTC: date and hour directories in UTC.
    assert [p.relative_to(cam).as_posix() for p in files] == [
        f"20260725/17/seg-{n:08d}.m4s" for n in range(3)
    ]
    assert (cam / "init.mp4").read_bytes() == segments[0].init
    for seg, path in zip(segments, files, strict=True):
        assert path.read_bytes() == seg.media
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["number"] == meta["sequence"] == seg.sequence
        assert meta["frame_count"] == seg.frame_count
        assert meta["start_wall_ns"] == seg.start_wall_ns
        assert meta["end_wall_ns"] == seg.end_wall_ns
        assert meta["start"].startswith("2026-07-25T17:")
        assert (cam / meta["init"]).read_bytes() == seg.init
        decode_with_ffmpeg(cam / "init.mp4", path)  # each segment on its own
    # The documented way to make one clip: cat init.mp4 seg-*.m4s > clip.mp4
    clip = tmp_path / "clip.mp4"
    clip.write_bytes((cam / "init.mp4").read_bytes() + b"".join(p.read_bytes() for p in files))
    assert int(probe_stream(clip)["nb_read_frames"]) == 70
    decode_with_ffmpeg(clip)
    # Nothing but finished files is left behind.
    assert not [p for p in cam.rglob(".*")], "no temporary files remain"
    assert sink.segments_written == 3


def test_crash_leftovers_are_not_segments_and_are_cleaned(
    tmp_path: Path, segments: list[MediaSegment]
) -> None:
    hour = tmp_path / "cam1" / "20260725" / "17"
    hour.mkdir(parents=True)
    # What a kill -9 during a write leaves: a hidden, partial temporary file.
    leftover = hour / ".seg-00000000.m4s.1a2b3c4d.tmp"
    leftover.write_bytes(segments[0].media[:100])
    assert list_segments(tmp_path / "cam1") == []
    sink = DirectorySink(tmp_path)
    sink.write(segments[0])
    assert not leftover.exists(), "recovery removes unfinished files"
    assert [p.name for p in list_segments(tmp_path / "cam1")] == ["seg-00000000.m4s"]


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "init.mp4"
    target.write_bytes(b"old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    # Fault: the destination name is taken by a directory, so the rename must fail.
    blocked = tmp_path / "blocked"
    (blocked / "inner").mkdir(parents=True)
    with pytest.raises(VaultError, match="blocked"):
        atomic_write(blocked, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "init.mp4"]


def test_unwritable_root_is_a_vault_error(tmp_path: Path, segments: list[MediaSegment]) -> None:
    root = tmp_path / "not-a-dir"
    root.write_text("a file where the data directory should be")
    with pytest.raises(VaultError):
        DirectorySink(root).write(segments[0])


def test_new_session_never_overwrites_earlier_footage(
    tmp_path: Path, segments: list[MediaSegment]
) -> None:
    first = DirectorySink(tmp_path)
    for seg in segments:
        first.write(seg)
    first.close()
    before = {p: p.read_bytes() for p in list_segments(tmp_path / "cam1")}
    # Restart with another resolution: new init, sequence numbers from 0 again.
    second = encode(30, width=192, height=108)
    sink = DirectorySink(tmp_path)
    for seg in second:
        sink.write(seg)
    cam = tmp_path / "cam1"
    files = list_segments(cam)
    assert [p.name for p in files] == [f"seg-{n:08d}.m4s" for n in range(5)]
    for path, data in before.items():
        assert path.read_bytes() == data
    assert (cam / "init.mp4").read_bytes() == second[0].init
    # Every segment still plays with the init its sidecar names.
    for path in files:
        meta = json.loads(path.with_suffix(".json").read_text())
        decode_with_ffmpeg(cam / meta["init"], path)
    old_meta = json.loads(files[0].with_suffix(".json").read_text())
    new_meta = json.loads(files[3].with_suffix(".json").read_text())
    assert (old_meta["number"], old_meta["sequence"]) == (0, 0)
    assert (new_meta["number"], new_meta["sequence"]) == (3, 0)
    assert old_meta["init"] != new_meta["init"]


def test_mixed_init_within_a_session_is_refused(
    tmp_path: Path, segments: list[MediaSegment]
) -> None:
    sink = DirectorySink(tmp_path)
    sink.write(segments[0])
    other = encode(5, width=192, height=108)[0]
    with pytest.raises(VaultError, match="different init"):
        sink.write(other)


def test_disk_full_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "init.mp4"
    target.write_bytes(b"old")
    real_write = os.write

    def full_disk(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)  # the fault: ENOSPC half-way through
    with pytest.raises(VaultError, match="No space left"):
        atomic_write(target, b"a longer new content")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["init.mp4"]


def test_camera_id_cannot_leave_the_root(tmp_path: Path, segments: list[MediaSegment]) -> None:
    evil = dataclasses.replace(segments[0], camera_id="../outside")
    with pytest.raises(VaultError, match="safe directory name"):
        DirectorySink(tmp_path / "root").write(evil)
    assert not (tmp_path / "outside").exists()

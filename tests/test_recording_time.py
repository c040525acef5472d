"""Times are true times: gaps in what was recorded stay gaps in every clip opened from it.

ffprobe judges the clips: the presentation time of each segment's first frame must sit where
its wall-clock capture time says, within a frame, across a camera outage, an evicted segment,
an encoder restart and a restart of ``edged`` itself; and the gaps are named.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.config import EncoderConfig
from edge.vault.bundle import verify_bundle
from edge.vault.remux import TimeGap, remux
from edge.video.base import MediaSegment
from edge.video.encoder import SegmentEncoder

from .daemon_util import running_edged, write_config
from .video_support import WALL0, moving_frames, probe_packets

FPS = 25.0


def _session(first: int, count: int, *, shift_s: float, outage_at: int | None = None,
             outage_s: float = 0.0) -> list[MediaSegment]:  # fmt: skip
    """One recording session (a fresh encoder, timestamps from 0) of ``count`` frames whose
    capture clocks start ``shift_s`` after WALL0; the camera is away ``outage_s`` before frame
    ``outage_at``."""
    encoder = SegmentEncoder("cam1", 160, 120, FPS, EncoderConfig(segment_seconds=1.0))
    out: list[MediaSegment] = []
    for i, frame in enumerate(moving_frames(160, 120, count, FPS, first_index=first)):
        extra = outage_s if outage_at is not None and i >= outage_at else 0.0
        frame.mono_ns += round((shift_s + extra) * 1e9) + 7_000_000_000  # another clock origin
        frame.wall_ns += round((shift_s + extra) * 1e9)
        out += encoder.encode(frame)
    return out + encoder.flush()


def _keyframe_times(clip: Path) -> list[float]:
    return [float(p["pts_time"]) for p in probe_packets(clip) if "K" in p["flags"]]


def test_opened_clip_keeps_outage_eviction_and_restart_gaps(tmp_path: Path) -> None:
    # Session 1: 4 s, the camera away for 9 s after 2 s. Session 2 (edged restarted, its
    # encoder's clock at 0 again) 30 s after session 1 began. A segment of session 1 was
    # evicted (or lost) in between.
    one = _session(0, 100, shift_s=0.0, outage_at=50, outage_s=9.0)
    two = _session(100, 75, shift_s=30.0)
    kept = [s for s in one if s.sequence != 1] + two
    gaps: list[TimeGap] = []
    clip = tmp_path / "clip.mp4"
    assert remux([(s.init, s.media, s.start_wall_ns) for s in kept], clip, gaps) == sum(
        s.frame_count for s in kept
    )
    starts = _keyframe_times(clip)
    expected = [(s.start_wall_ns - WALL0) / 1e9 for s in kept]
    assert len(starts) == len(expected)
    for got, want in zip(starts, expected, strict=True):
        assert abs(got - want) <= 1 / FPS, (starts, expected)
    # The clip lasts as long as the wall clock says, not as long as its frames.
    assert abs(float(probe_packets(clip)[-1]["pts_time"]) - (30.0 + 74 / FPS)) <= 1 / FPS
    # Named: the evicted second followed by the outage (1 s → 11 s), then the restart.
    assert [round(g.seconds) for g in gaps] == [10, 17]
    assert gaps[0].after_wall_ns == WALL0 + 1_000_000_000
    assert gaps[1].after_wall_ns == WALL0 + 13_000_000_000


def test_a_wall_clock_stepped_back_never_runs_the_clip_backwards(tmp_path: Path) -> None:
    one = _session(0, 50, shift_s=0.0)
    two = _session(50, 50, shift_s=-60.0)  # NTP stepped the clock back a minute
    clip = tmp_path / "clip.mp4"
    remux([(s.init, s.media, s.start_wall_ns) for s in one + two], clip)
    times = [float(p["pts_time"]) for p in probe_packets(clip)]
    assert times == sorted(times) and len(set(times)) == len(times) == 100


def test_restarted_edged_shows_the_downtime_in_the_opened_clip(
    tmp_path: Path, data_dir: Path
) -> None:
    config = write_config(tmp_path / "edge.toml", data_dir)
    for run in range(2):
        run_dir = tmp_path / f"run{run}"
        run_dir.mkdir()
        with running_edged(config, run_dir, "--run-for", "2.5") as (proc, _notify):
            assert proc.wait(timeout=60) == 0
            assert proc.stderr is not None
            log = proc.stderr.read()
        if run == 0:
            time.sleep(4.0)  # edged down: nothing is recorded
    # The restarted edged says how long nothing was recorded (and counts it in its status).
    assert "[cam1] recording resumes after" in log
    bundle, clip = tmp_path / "bundle", tmp_path / "clip.mp4"
    subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "export", "--config", str(config),
         "--data-dir", str(data_dir), "--from", "2000-01-01T00:00:00Z",
         "--to", "2100-01-01T00:00:00Z", "--case", "T-5", "--out", str(bundle)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    opened = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "open", str(bundle),
         "--key", str(config.parent / "csu" / "csu.key.json"), "--out", str(clip),
         "--unit-key", str(data_dir / "keys" / "unit-signing.pub.pem")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    segments = verify_bundle(bundle, trust_bundle_key=True).segments
    walls = [s.header.start_wall_ns for s in segments]
    starts = _keyframe_times(clip)
    assert len(starts) == len(walls)
    frame = 1 / 10  # the test configuration records at 10 fps
    for got, wall in zip(starts, walls, strict=True):
        assert abs(got - (wall - walls[0]) / 1e9) <= frame, (starts, walls)
    assert max(b - a for a, b in itertools.pairwise(starts)) > 4.0
    assert "time gap: nothing recorded for" in opened.stdout
    verified = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "verify", "--config", str(config),
         "--data-dir", str(data_dir)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert "OK: signatures and chains intact" in verified.stdout
    assert "time gap: nothing recorded for" in verified.stdout


def test_encoder_restart_inside_a_session_is_placed_by_wall_clock(tmp_path: Path) -> None:
    # The recording thread restarts its encoder after a failure: a new timeline at 0, the
    # segment in flight lost; the next segments must come at their own time, not at once.
    one = _session(0, 50, shift_s=0.0)
    two = _session(90, 50, shift_s=3.5)
    clip = tmp_path / "clip.mp4"
    gaps: list[TimeGap] = []
    remux([(s.init, s.media, s.start_wall_ns) for s in one + two], clip, gaps)
    starts = _keyframe_times(clip)
    assert abs(starts[len(one)] - 3.5) <= 1 / FPS
    assert [round(g.seconds, 1) for g in gaps] == [1.5]


def test_pipeline_status_counts_the_time_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera that vanished for 6 s (fault injected on the capture clock of a real synthetic
    scene): the recording keeps the gap and the camera's status counts it."""
    from edge import pipeline as pipeline_mod
    from edge.capture.synthetic import SyntheticSource
    from edge.config import CameraConfig
    from edge.frames import Frame
    from edge.video.base import SegmentSink

    class Vanishing(SyntheticSource):
        def read(self) -> Frame | None:
            frame = super().read()
            if frame is not None and frame.index >= 20:
                frame.mono_ns += 6_000_000_000
            return frame if frame is None or frame.index < 60 else None

    class Kept(SegmentSink):
        def __init__(self) -> None:
            self.segments: list[MediaSegment] = []

        def write(self, segment: MediaSegment) -> None:
            self.segments.append(segment)

        def recorded_until_ns(self, camera_id: str) -> int | None:
            return time.time_ns() - 30_000_000_000  # an earlier run stopped 30 s ago

    cam = CameraConfig(source="synthetic", width=160, height=120, fps=FPS)
    monkeypatch.setattr(
        pipeline_mod, "open_source", lambda c: Vanishing(160, 120, FPS, realtime=False)
    )
    sink = Kept()
    pipe = pipeline_mod.CameraPipeline(cam, sink)
    pipe.start()
    deadline = time.monotonic() + 30
    while not pipe.finished() and time.monotonic() < deadline:
        time.sleep(0.05)
    pipe.stop()
    snap = pipe.snapshot()
    # The 30 s since the previous run, then the 6 s outage.
    assert snap["time_gaps"] == 2 and abs(snap["time_gap_s"] - 36.0) <= 1.0
    assert sum(s.frame_count for s in sink.segments) == 60


def test_csu_playlist_breaks_a_run_at_a_time_gap() -> None:
    """Frame counts go on across a camera outage; the playlist must still show the gap (a new
    run with its own recording time), not play the two sides back to back."""
    from edge.csu.receiver.hls import playlist
    from edge.csu.receiver.store import StoredSegment

    def seg(sequence: int, start_s: float, first_index: int) -> StoredSegment:
        start = WALL0 + round(start_s * 1e9)
        return StoredSegment(
            sequence, "h", "p", start, start + 2_000_000_000, 50, first_index, "e", 1, start
        )

    text = playlist([seg(0, 0, 0), seg(1, 2, 50), seg(2, 44, 100)], live=False)
    lines = text.splitlines()
    assert lines.count("#EXT-X-DISCONTINUITY") == 1
    assert lines.index("#EXT-X-DISCONTINUITY") == lines.index("media/1.m4s") + 1
    stamps = [ln for ln in lines if ln.startswith("#EXT-X-PROGRAM-DATE-TIME:")]
    when = [
        datetime.fromtimestamp(WALL0 / 1e9 + s, UTC).isoformat(timespec="milliseconds")
        for s in (0, 44)
    ]
    assert stamps == [f"#EXT-X-PROGRAM-DATE-TIME:{w}" for w in when]

"""CaptureLoop: reconnect with jittered exponential back-off against a dying camera.

Time is injected (a fake clock advanced by the camera's reads and by the loop's sleeps), so
delays are checked exactly and the tests take milliseconds.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

import pytest

from edge.backoff import backoff_delay
from edge.capture.base import FrameSource
from edge.capture.loop import CaptureLoop, CaptureState
from edge.errors import CaptureError
from edge.frames import Frame


@dataclass
class FakeTime:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class DyingCamera(FrameSource):
    """Follows a script, one entry per open(): ``"refuse"`` fails the open; an int N delivers
    N frames then dies (transient); ``("end", N)`` delivers N frames then ends the stream.
    Each open restarts its own frame count at 0, like a camera that rebooted. ``skip`` makes
    the camera's count jump (frames it lost)."""

    def __init__(
        self,
        script: list[object],
        time_: FakeTime,
        *,
        fatal: bool = False,
        skip_at: int | None = None,
    ) -> None:
        super().__init__(64, 64, 25.0)
        self.description = "dying test camera"
        self.script = list(script)
        self.time = time_
        self.fatal = fatal
        self.skip_at = skip_at
        self.opens = 0
        self.closes = 0
        self._left = 0
        self._ends = False
        self._count = 0

    def open(self) -> None:
        self.opens += 1
        step = self.script.pop(0)
        if step == "refuse":
            raise CaptureError("dying test camera: connection refused", transient=not self.fatal)
        if isinstance(step, tuple):
            self._ends, self._left = True, int(step[1])
        else:
            self._ends, self._left = False, int(step)  # type: ignore[call-overload]
        self._count = 0

    def read(self) -> Frame | None:
        if self._left == 0:
            if self._ends:
                return None
            raise CaptureError("dying test camera: stream lost", transient=not self.fatal)
        self._left -= 1
        self.time.now += 0.04  # one frame period at 25 fps
        index = self._count
        self._count += 1
        if self.skip_at is not None and index >= self.skip_at:
            index += 3  # the camera lost three frames here
        return Frame.blank(64, 64, index=index)

    def close(self) -> None:
        self.closes += 1


def _loop(
    camera: DyingCamera,
    time_: FakeTime,
    frames: list[Frame],
    rng: random.Random,
    *,
    backoff_initial: float = 0.5,
    backoff_max: float = 30.0,
    backoff_reset_s: float = 60.0,
) -> CaptureLoop:
    return CaptureLoop(
        camera,
        frames.append,
        name="cam1",
        clock=time_.clock,
        sleep=time_.sleep,
        rng=rng,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        backoff_reset_s=backoff_reset_s,
    )


class MaxRandom(random.Random):
    """Always draws the top of the range, so delays equal their caps."""

    def random(self) -> float:
        return 1.0


def test_backoff_delay_is_capped_full_jitter() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        cap = min(30.0, 0.5 * 2**attempt)
        draws = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in draws)
        assert max(draws) > 0.8 * cap and min(draws) < 0.2 * cap  # spread over the whole range


def test_dying_camera_reconnects_with_growing_delays(caplog: pytest.LogCaptureFixture) -> None:
    t = FakeTime()
    script: list[object] = [5, "refuse", "refuse", 3, "refuse", "refuse", "refuse", ("end", 4)]
    camera = DyingCamera(script, t)
    frames: list[Frame] = []
    loop = _loop(camera, t, frames, MaxRandom())
    with caplog.at_level(logging.INFO, logger="edge.capture.loop"):
        loop.run()
    # Failures in a row: 1, 2, 3, 4, 5, 6, 7 (never stable for 60 s) -> caps 0.5 … 30.
    assert t.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert loop.state is CaptureState.ENDED
    assert [f.index for f in frames] == list(range(12)), "indexes keep increasing"
    stats = loop.stats()
    assert stats.frames_in == 12 and stats.reconnects == 7 and stats.source_gaps == 0
    assert camera.opens == 8 and camera.closes >= 8
    transitions = [r.getMessage() for r in caplog.records]
    assert transitions[0] == "cam1: starting: opening dying test camera"
    assert "cam1: starting -> running: dying test camera delivering frames" in transitions
    backoffs = [m for m in transitions if "-> backoff" in m]
    assert len(backoffs) == 7
    assert "stream lost; retry 1 in 0.50 s" in backoffs[0]
    assert "connection refused; retry 7 in 30.00 s" in backoffs[-1]
    assert transitions[-1] == "cam1: running -> ended: end of dying test camera"
    levels = {r.getMessage(): r.levelno for r in caplog.records}
    assert levels[backoffs[0]] == logging.WARNING


def test_delays_are_jittered_and_reproducible() -> None:
    t = FakeTime()
    camera = DyingCamera(["refuse"] * 6 + [("end", 1)], t)
    loop = _loop(camera, t, [], random.Random(42))
    loop.run()
    reference = random.Random(42)
    expected = [reference.uniform(0.0, min(30.0, 0.5 * 2**k)) for k in range(6)]
    assert t.sleeps == expected
    assert len(set(t.sleeps)) == 6  # jittered, not the bare caps
    caps = [min(30.0, 0.5 * 2**k) for k in range(6)]
    assert all(0 <= d <= c for d, c in zip(t.sleeps, caps, strict=True))


def test_backoff_resets_after_a_stable_period() -> None:
    t = FakeTime()
    # 2000 frames at 25 fps = 80 s > backoff_reset_s: the next failure starts from 0.5 again.
    camera = DyingCamera([3, "refuse", 2000, "refuse", ("end", 1)], t)
    loop = _loop(camera, t, [], MaxRandom(), backoff_reset_s=60.0)
    loop.run()
    assert t.sleeps == [0.5, 1.0, 0.5, 1.0]


def test_non_transient_error_fails_without_retry(caplog: pytest.LogCaptureFixture) -> None:
    t = FakeTime()
    camera = DyingCamera([2], t, fatal=True)
    frames: list[Frame] = []
    loop = _loop(camera, t, frames, MaxRandom())
    with caplog.at_level(logging.INFO):
        loop.run()
    assert loop.state is CaptureState.FAILED and len(frames) == 2 and t.sleeps == []
    assert isinstance(loop.error, CaptureError)
    failed = [r for r in caplog.records if "-> failed" in r.getMessage()]
    assert failed and failed[0].levelno == logging.ERROR
    assert loop.stats().reason == "dying test camera: stream lost"


def test_consumer_failure_stops_capture() -> None:
    t = FakeTime()
    camera = DyingCamera([10], t)

    def broken(frame: Frame) -> None:
        if frame.index == 3:
            raise ValueError("mask does not fit")

    loop = CaptureLoop(camera, broken, name="cam1", clock=t.clock, sleep=t.sleep)
    loop.run()
    assert loop.state is CaptureState.FAILED
    assert "handling frame 3" in loop.stats().reason and camera.closes >= 1


def test_stats_count_source_gaps_and_measure_fps() -> None:
    t = FakeTime()
    camera = DyingCamera([("end", 50)], t, skip_at=20)
    frames: list[Frame] = []
    loop = _loop(camera, t, frames, MaxRandom())
    assert loop.stats().last_frame_age_s is None and loop.stats().fps is None
    loop.run()
    stats = loop.stats()
    assert stats.source_gaps == 1 and stats.frames_lost == 3
    assert frames[19].index == 19 and frames[20].index == 23, "the gap shows in the index"
    assert stats.fps == pytest.approx(25.0)
    t.now += 2.0
    assert stats.last_frame_age_s == 0.0 and loop.stats().last_frame_age_s == pytest.approx(2.0)


def test_stop_cuts_a_backoff_short() -> None:
    class Refusing(FrameSource):
        description = "unplugged camera"

        def __init__(self) -> None:
            super().__init__(64, 64, 25.0)
            self.opened = threading.Event()

        def open(self) -> None:
            self.opened.set()
            raise CaptureError("unplugged camera: no such device", transient=True)

        def read(self) -> Frame | None:
            raise AssertionError("never opened")

        def close(self) -> None:
            pass

    source = Refusing()
    loop = CaptureLoop(source, lambda f: None, name="cam2", backoff_initial=20.0, backoff_max=20.0)
    loop.start()
    assert source.opened.wait(5)
    deadline = time.monotonic() + 5
    while loop.state is not CaptureState.BACKOFF and time.monotonic() < deadline:
        time.sleep(0.01)
    loop.stop()
    assert loop.join(5), "stop() must not wait for the 20 s back-off"
    assert loop.state is CaptureState.STOPPED
    with pytest.raises(RuntimeError):
        loop.start()


def test_stop_while_running_closes_the_source() -> None:
    from edge.capture.synthetic import SyntheticSource

    source = SyntheticSource(64, 64, 100.0, pedestrians=1, vehicles=0, realtime=True)
    got = threading.Event()
    seen: list[int] = []

    def on_frame(frame: Frame) -> None:
        seen.append(frame.index)
        if len(seen) >= 5:
            got.set()

    loop = CaptureLoop(source, on_frame, name="cam3")
    loop.start()
    assert got.wait(5)
    loop.stop()
    assert loop.join(5) and loop.state is CaptureState.STOPPED
    # A live camera skips frames when its reader is late (a loaded machine): gaps, no repeats.
    assert seen == sorted(set(seen))
    stats = loop.stats()
    assert stats.frames_in == len(seen)
    assert seen[-1] + 1 - len(seen) == stats.frames_lost


def test_rejects_nonsense_backoff() -> None:
    with pytest.raises(ValueError):
        CaptureLoop(DyingCamera([], FakeTime()), lambda f: None, name="x", backoff_initial=0)


def test_ten_thousand_failures_then_the_camera_comes_back() -> None:
    """About four days of a camera down: the back-off never overflows and stays capped."""
    t = FakeTime()
    camera = DyingCamera(["refuse"] * 10_000 + [("end", 3)], t)
    frames: list[Frame] = []
    loop = _loop(camera, t, frames, MaxRandom())
    loop.run()
    assert loop.state is CaptureState.ENDED, loop.stats().reason
    assert len(frames) == 3 and loop.stats().reconnects == 10_000
    assert len(t.sleeps) == 10_000 and max(t.sleeps) == 30.0
    assert t.sleeps[-1] == 30.0
    for attempt in (1023, 1024, 10**6):
        assert 0.0 <= backoff_delay(attempt, 0.5, 30.0, random.Random(attempt)) <= 30.0


class SilentCamera(DyingCamera):
    """A camera whose TCP port stops answering while it reboots, then answers again."""

    def __init__(self, script: list[object], time_: FakeTime, back_at: float) -> None:
        super().__init__(script, time_)
        self.back_at = back_at
        self.reopened_at: float | None = None

    def answers(self) -> bool | None:
        return self.time.now >= self.back_at

    def open(self) -> None:
        if self.time.now >= self.back_at and self.reopened_at is None:
            self.reopened_at = self.time.now
        if self.time.now < self.back_at:
            self.script.insert(0, "refuse")
        super().open()


def test_camera_that_answers_again_is_reopened_at_once() -> None:
    t = FakeTime()
    back_at = t.now + 600.0  # ten minutes of outage: the back-off has grown to 30 s
    camera = SilentCamera([("end", 2)], t, back_at)
    frames: list[Frame] = []
    loop = _loop(camera, t, frames, MaxRandom())
    loop.run()
    assert loop.state is CaptureState.ENDED and len(frames) == 2
    assert camera.reopened_at is not None
    # Checked every second: reopened within one probe interval, not after up to 30 s.
    assert camera.reopened_at - back_at <= 1.0
    assert all(s <= 2.0 for s in t.sleeps), "long waits are sliced to the probe interval"


def test_camera_answering_all_along_keeps_its_backoff() -> None:
    """Up but refusing the stream (a wrong password): no hammering, the full delays."""

    class Answering(DyingCamera):
        def answers(self) -> bool | None:
            return True

    t = FakeTime()
    camera = Answering(["refuse"] * 8 + [("end", 1)], t)
    loop = _loop(camera, t, [], MaxRandom())
    start = t.now
    loop.run()
    assert camera.opens == 9
    assert t.now - start >= 0.5 + 1 + 2 + 4 + 8 + 16 + 30 + 30


def test_rtsp_source_answers_when_its_port_accepts() -> None:
    import socket

    from edge.capture.pyav import PyAVSource

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        source = PyAVSource(f"rtsp://u:p@127.0.0.1:{port}/s", 64, 64, 25.0)
        assert source.answers() is True
    assert source.answers() is False, "port closed: the camera is silent"
    assert PyAVSource("v4l2:/dev/no-such-video", 64, 64, 25.0).answers() is False
    assert PyAVSource("file:/x.mp4", 64, 64, 25.0).answers() is None

"""Live sources: RTSP against a real server (GStreamer's gst-rtsp-server, run by the system
Python as a separate process), including a camera that dies and comes back; V4L2 without a
device (v4l2loopback cannot be loaded in a container; hw-tests cover a real camera)."""

from __future__ import annotations

import itertools
import logging
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.capture.loop import CaptureLoop, CaptureState
from edge.capture.pyav import PyAVSource
from edge.errors import CaptureError
from edge.frames import Frame

from .conftest import REPO

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = REPO / "tests" / "rtsp_server.py"
SECRET = "s3cret-Pa55"


def _server_available() -> str | None:
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst; Gst.init(None);"
        "assert all(Gst.ElementFactory.find(e) for e in "
        "('videotestsrc', 'x264enc', 'rtph264pay', 'jpegenc', 'rtpjpegpay'))"
    )
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} missing"
    result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, check=False)
    if result.returncode:
        return "gst-rtsp-server or GStreamer plugins missing (tools/setup.sh installs them)"
    return None


_MISSING = _server_available()
needs_server = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RtspCamera:
    """One gst-rtsp-server process; :meth:`kill` is the camera dying, :meth:`start` it rebooting."""

    def __init__(self, port: int, *args: str) -> None:
        self.port = port
        self.args = args
        self.proc: subprocess.Popen[str] | None = None

    def url(self, password: str = SECRET) -> str:
        return f"rtsp://admin:{password}@127.0.0.1:{self.port}/cam"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), str(self.port), *self.args,
             "--user", "admin", "--password", SECRET],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=15) or self.proc.stdout.readline().strip() != "READY":
                self.kill()
                pytest.fail("RTSP test server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def camera(request: pytest.FixtureRequest) -> Iterator[RtspCamera]:
    codec = getattr(request, "param", "h264")
    cam = RtspCamera(_free_port(), "--codec", codec, "--size", "320x240", "--fps", "25")
    cam.start()
    try:
        yield cam
    finally:
        cam.kill()


def _source(url: str) -> PyAVSource:
    return PyAVSource(url, 160, 120, 25.0, open_timeout_s=5.0, read_timeout_s=2.0)


@needs_server
@pytest.mark.parametrize("camera", ["h264", "mjpeg"], indirect=True)
def test_rtsp_frames(
    camera: RtspCamera, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    codec = camera.args[1]
    source = _source(camera.url())
    assert SECRET not in source.description
    with caplog.at_level(logging.DEBUG):
        source.open()
        frames = [source.read() for _ in range(40)]
        source.close()
    got = [f for f in frames if f is not None]
    assert len(got) == 40 and all((f.width, f.height) == (160, 120) for f in got)
    indexes = [f.index for f in got]
    assert indexes == sorted(set(indexes)), "indexes strictly increase"
    # Indexes come from the stream's timestamps at 25 fps: 40 frames span 39 periods.
    # (A starved test server may drop a few: loose upper bound.)
    assert 39 <= indexes[-1] - indexes[0] < 60, "few or no frames lost on loopback"
    assert all(b.mono_ns > a.mono_ns for a, b in itertools.pairwise(got))
    # The ball moves.
    assert not np.array_equal(got[0].y, got[-1].y)
    # Levels: H.264 arrives in limited range and stays 16 (black) / 235 (white). JPEG is full
    # range and is converted; GStreamer's jpegenc stores its limited-range input as is, so
    # black 16 and white 235 read as full range become 16 + 16·219/255 = 30 and 218.
    expected = (16, 235) if codec == "h264" else (30, 218)
    for frame in got:
        # Percentiles: the bicubic scaler rings a little at the ball's edge.
        low, high = np.percentile(frame.y, [1, 99])
        assert abs(low - expected[0]) <= 2 and abs(high - expected[1]) <= 2, (low, high)
    out, err = capfd.readouterr()
    assert SECRET not in caplog.text + out + err


@needs_server
def test_rtsp_wrong_password_is_a_clear_transient_error(
    camera: RtspCamera, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    source = _source(camera.url(password="wrong-" + SECRET))
    with caplog.at_level(logging.DEBUG), pytest.raises(CaptureError) as info:
        source.open()
    message = str(info.value)
    assert "401" in message and "rtsp://127.0.0.1" in message
    assert info.value.transient, "a camera is retried: its password may be fixed on its side"
    assert info.value.__suppress_context__, "FFmpeg's message (with the URL) is not chained"
    out, err = capfd.readouterr()
    assert SECRET not in message + caplog.text + out + err
    assert "wrong-" not in message + caplog.text + out + err


def test_rtsp_connection_refused_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()  # nobody listens there
    source = _source(f"rtsp://admin:{SECRET}@127.0.0.1:{port}/cam")
    with pytest.raises(CaptureError, match="Connection refused") as info:
        source.open()
    assert info.value.transient
    assert info.value.__suppress_context__, "FFmpeg's message (with the URL) is not chained"
    sleeps: list[float] = []

    def stop_after_three(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            loop.stop()

    loop = CaptureLoop(source, lambda f: None, name="cam1", sleep=stop_after_three)
    with caplog.at_level(logging.INFO):
        loop.run()
    assert loop.state is CaptureState.STOPPED and len(sleeps) == 3
    assert sleeps[0] <= 0.5 and sleeps[1] <= 1.0 and sleeps[2] <= 2.0
    backoffs = [r.getMessage() for r in caplog.records if "-> backoff" in r.getMessage()]
    assert len(backoffs) == 3 and "Connection refused" in backoffs[0]
    assert SECRET not in caplog.text


@needs_server
def test_rtsp_camera_dies_and_comes_back(
    camera: RtspCamera, caplog: pytest.LogCaptureFixture
) -> None:
    indexes: list[int] = []
    enough = threading.Event()
    target = [20]

    def on_frame(frame: Frame) -> None:
        indexes.append(frame.index)
        if len(indexes) >= target[0]:
            enough.set()

    source = _source(camera.url())
    loop = CaptureLoop(source, on_frame, name="cam1", backoff_initial=0.2, backoff_max=0.5)
    with caplog.at_level(logging.INFO, logger="edge.capture.loop"):
        loop.start()
        try:
            assert enough.wait(20), f"no frames: {loop.stats()}"
            camera.kill()
            deadline = time.monotonic() + 15
            while loop.state is not CaptureState.BACKOFF and time.monotonic() < deadline:
                time.sleep(0.05)
            assert loop.state is CaptureState.BACKOFF, loop.stats()
            camera.start()
            enough.clear()
            target[0] = len(indexes) + 20
            assert enough.wait(30), f"did not come back: {loop.stats()}"
        finally:
            loop.stop()
            assert loop.join(10)
    stats = loop.stats()
    assert stats.reconnects >= 1 and stats.state is CaptureState.STOPPED
    assert indexes == sorted(set(indexes)), "indexes keep increasing across the reconnect"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("-> running" in m for m in messages) >= 2
    assert any("-> backoff" in m for m in messages)
    assert SECRET not in caplog.text


def test_v4l2_missing_device_is_transient(tmp_path: Path) -> None:
    device = tmp_path / "video7"
    source = PyAVSource(f"v4l2:{device}", 640, 480, 25.0)
    assert source.description == f"V4L2 device {device}"
    with pytest.raises(CaptureError) as info:
        source.open()
    assert info.value.transient, "a camera unplugged for a moment comes back"
    assert "No such file or directory" in str(info.value) and str(device) in str(info.value)
    source.close()


@needs_server
def test_rtsp_frozen_camera_times_out(camera: RtspCamera) -> None:
    """A camera that stops sending without closing the connection (hung firmware, a switch
    dropping frames) is detected by the read timeout, as a transient error."""
    source = _source(camera.url())
    source.open()
    try:
        assert source.read() is not None
        assert camera.proc is not None
        camera.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(CaptureError) as info:
            for _ in range(500):  # frames already buffered, then nothing
                source.read()
        waited = time.monotonic() - started
        assert info.value.transient and "nothing received for 2 s" in str(info.value)
        assert waited < 2.0 + 6.0, "the 2 s read timeout, plus buffered frames and slack"
    finally:
        if camera.proc is not None:
            camera.proc.send_signal(signal.SIGCONT)
        source.close()

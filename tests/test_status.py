"""``edgectl status``/``diag`` against a real edged, driven by real faults."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge import config as config_mod
from edge.app import daemon as daemon_mod
from edge.snapshot import (
    CameraStatus,
    CaptureStatus,
    DaemonStatus,
    MemoryStatus,
    StorageStatus,
    SystemStatus,
    TimeStatus,
    VaultStatus,
)
from edge.video.base import MediaSegment
from edge.video.dirsink import DirectorySink

from .conftest import tool
from .daemon_util import running_edged, write_config
from .test_capture_live import RtspCamera, _free_port, needs_server


def edgectl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def status_json(config: Path) -> tuple[int, dict[str, Any]]:
    result = edgectl("status", "--json", "--config", str(config))
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


@pytest.fixture
def sockdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="edge-st-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def socket_config(tmp_path: Path, data_dir: Path, sockdir: Path) -> Path:
    """The test unit's configuration, its control socket in a short temporary directory."""
    return write_config(
        tmp_path / "edge.toml",
        data_dir,
        extra=f'\n[control]\nsocket = "{sockdir}/control.sock"\n',
    )


def wait_for_frames(config: Path) -> None:
    wait_until(
        lambda: (d := status_json(config)[1]["daemon"]) and d["cameras"][0]["frames_in"] > 0,
        30,
        "edged to report its first frames",
    )


@needs_server
def test_status_follows_camera_unplug_and_replug(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    """A network camera (a real RTSP server) is unplugged and plugged back in."""
    camera = RtspCamera(_free_port(), "--codec", "h264", "--size", "320x240", "--fps", "10")
    camera.start()
    config = write_config(
        tmp_path / "edge.toml",
        data_dir,
        source=camera.url(),
        extra=f'\n[control]\nsocket = "{sockdir}/control.sock"\n',
    )
    try:
        with running_edged(config, tmp_path) as (proc, notify):
            notify.wait_for("READY=1", timeout=30)
            code, st = wait_until(
                lambda: (
                    (r := status_json(config))[1]["daemon"]["cameras"][0]["frames_in"] > 5 and r
                ),
                30,
                "frames",
            )
            cam = st["daemon"]["cameras"][0]
            assert cam["capture"]["state"] == "running"
            assert cam["width"] == 320 and cam["masks"] == 1
            assert "s3cret" not in json.dumps(st), "the camera password leaked into status"

            camera.kill()  # unplugged
            code, st = wait_until(
                lambda: (r := status_json(config))[1]["daemon"]["alerts"]["active"] and r,
                40,
                "the camera-lost alert",
            )
            assert st["daemon"]["alerts"]["active"] == ["camera-lost (cam1)"]
            assert st["daemon"]["cameras"][0]["capture"]["state"] in ("backoff", "starting")
            assert code == 2
            diag = edgectl("diag", "--config", str(config))
            assert diag.returncode == 2
            assert "[FAIL] camera: camera cam1 delivers no frames" in diag.stdout
            assert "resumes by itself" in diag.stdout
            frames_before = st["daemon"]["cameras"][0]["frames_in"]

            camera.start()  # plugged back in: capture resumes without restarting edged
            code, st = wait_until(
                lambda: (
                    (r := status_json(config))[1]["daemon"]["cameras"][0]["frames_in"]
                    > frames_before + 5
                    and not r[1]["daemon"]["alerts"]["active"]
                    and r
                ),
                60,
                "capture to resume",
            )
            assert st["daemon"]["cameras"][0]["capture"]["state"] == "running"
            assert st["daemon"]["cameras"][0]["capture"]["reconnects"] >= 1
            recent = [(a["kind"], a["state"]) for a in st["daemon"]["alerts"]["recent"]]
            assert recent[-2:] == [("camera-lost", "raised"), ("camera-lost", "cleared")]
            # Both edges are evidence in the vault, signed, read back by edgectl events.
            listed = edgectl("events", "--config", str(config), "--json", "--kind", "camera-lost")
            assert listed.returncode == 0, listed.stdout + listed.stderr
            kept = [json.loads(line)["event"] for line in listed.stdout.splitlines()]
            assert [(e["camera"], e["state"]) for e in kept] == [
                ("cam1", "raised"),
                ("cam1", "cleared"),
            ]
            assert proc.poll() is None
    finally:
        camera.kill()


class StallingSink(DirectorySink):
    """Fault injection: a storage medium that stalls for a while (a dying SD card)."""

    stall = threading.Event()

    def write(self, segment: MediaSegment) -> None:
        if self.stall.is_set():
            time.sleep(4.0)
        super().write(segment)


def test_status_reports_drops_after_a_stall(
    tmp_path: Path, data_dir: Path, sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = socket_config(tmp_path, data_dir, sockdir)
    cfg, origin = config_mod.load(config)
    monkeypatch.setattr(
        daemon_mod, "make_sink", lambda cfg: StallingSink(cfg.unit.data_dir / "segments")
    )
    daemon = daemon_mod.Daemon(cfg, origin, config)
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    try:
        code, st = wait_until(
            lambda: (
                (r := status_json(config))[1]["daemon"]
                and r[1]["daemon"]["cameras"][0]["segments_written"] >= 1
                and r
            ),
            30,
            "a first segment",
        )
        assert st["daemon"]["cameras"][0]["frames_dropped"] == 0
        StallingSink.stall.set()
        code, st = wait_until(
            lambda: (
                (r := status_json(config))[1]["daemon"]["cameras"][0]["frames_dropped"] > 0 and r
            ),
            30,
            "dropped frames",
        )
        assert code >= 1
        dropped = st["daemon"]["cameras"][0]["frames_dropped"]
        assert dropped == daemon.pipelines["cam1"].frames_dropped or dropped > 0
        findings = {f["section"]: f for f in st["findings"] if f["level"] != "OK"}
        assert "dropped by the recording path" in findings["camera"]["cause"]
    finally:
        StallingSink.stall.clear()
        daemon.request_stop()
        runner.join(30)


def test_status_screen_in_a_real_terminal(tmp_path: Path, data_dir: Path, sockdir: Path) -> None:
    tmux = tool("tmux")
    config = socket_config(tmp_path, data_dir, sockdir)
    session = f"edge-status-{time.monotonic_ns()}"
    with running_edged(config, tmp_path) as (_proc, notify):
        notify.wait_for("READY=1", timeout=30)
        wait_for_frames(config)
        cmd = f"{sys.executable} -m edge.cli.main status --config {config}; sleep 30"
        subprocess.run(
            [tmux, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd], check=True
        )
        try:
            screen = wait_until(
                lambda: (
                    (
                        (
                            out := subprocess.run(
                                [tmux, "capture-pane", "-p", "-t", session],
                                capture_output=True,
                                text=True,
                                check=True,
                            ).stdout
                        )
                        and "checks passed" in out
                    )
                    or ("problem(s)" in out and out)
                ),
                30,
                "the status screen",
            )
            colour = subprocess.run(
                [tmux, "capture-pane", "-p", "-e", "-t", session],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            subprocess.run([tmux, "kill-session", "-t", session], check=False)
    lines = screen.rstrip("\n").splitlines()
    assert len(lines) <= 24
    assert all(len(line) <= 80 for line in lines)
    assert "edge unit test-unit" in lines[0]
    assert any(line.startswith("CAMERA") and "cam1 320x240 running" in line for line in lines)
    assert "\x1b[" in colour, "a terminal gets colour"
    plain = edgectl("status", "--config", str(config))
    assert "\x1b[" not in plain.stdout, "a pipe gets plain text"


def test_installer_preview_goes_through_edged_and_is_audited(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    from PIL import Image

    config = socket_config(tmp_path, data_dir, sockdir)
    with running_edged(config, tmp_path) as (proc, notify):
        notify.wait_for("READY=1", timeout=30)
        wait_for_frames(config)
        out = tmp_path / "preview.png"
        result = edgectl("mask", "preview", "--out", str(out), "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert "as edged sees it" in result.stdout
        with Image.open(out) as image:
            assert image.size == (320, 240)
        # A candidate mask drawn by the installer adds to what is hidden.
        bigger = tmp_path / "candidate.toml"
        bigger.write_text(config.read_text().replace("[0.55, 0.15]", "[0.05, 0.05]"))
        result = edgectl("mask", "preview", "--out", str(out), "--config", str(bigger))
        assert result.returncode == 0, result.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    audit = edgectl("audit", "--config", str(config), "--json")
    assert audit.returncode == 0, audit.stderr
    records = [json.loads(line) for line in audit.stdout.splitlines() if line.strip()]
    previews = [r for r in records if r.get("action") == "control:preview"]
    assert len(previews) == 2
    assert previews[0]["actor"].startswith("uid=0(root)")


def _pane(tmux: str, session: str) -> str:
    return subprocess.run(
        [tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    ).stdout


def test_status_watch_redraws_in_place_and_ctrl_c_keeps_the_last_status(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    """An installer aiming a camera: the screen is redrawn where it stands, Ctrl-C ends it
    without a traceback and the exit status is the last check's."""
    tmux = tool("tmux")
    config = socket_config(tmp_path, data_dir, sockdir)
    session = f"edge-watch-{time.monotonic_ns()}"
    with running_edged(config, tmp_path) as (_proc, notify):
        notify.wait_for("READY=1", timeout=30)
        wait_for_frames(config)
        expected, _ = status_json(config)
        cmd = (
            f"{sys.executable} -m edge.cli.main status --watch 0.2 --config {config}"
            f" 2>{tmp_path}/stderr; echo EXIT=$? >{tmp_path}/rc; sleep 30"
        )
        subprocess.run(
            [tmux, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd], check=True
        )
        try:
            first = wait_until(
                lambda: "^C quits" in (out := _pane(tmux, session)) and out,
                30,
                "the first screen",
            )
            frames = re.compile(r"cam1 320x240 running .* frame (\S+)")
            time.sleep(1.0)  # several redraws
            later = _pane(tmux, session)
            subprocess.run([tmux, "send-keys", "-t", session, "C-c"], check=True)
            rc = wait_until(
                lambda: (p := tmp_path / "rc").exists() and p.read_text().strip(), 30, "exit"
            )
        finally:
            subprocess.run([tmux, "kill-session", "-t", session], check=False)
    for screen in (first, later):
        lines = screen.rstrip("\n").splitlines()
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        assert lines[0].startswith("edge unit test-unit"), "the title is never scrolled off"
        assert screen.count("edge unit test-unit") == 1, "redrawn in place, not appended"
        assert frames.search(screen)
    assert rc == f"EXIT={expected}"
    assert (tmp_path / "stderr").read_text() == "", "Ctrl-C is not an error"


WATCH = [sys.executable, "-m", "edge.cli.main", "status", "--watch"]


def test_status_watch_piped_repeats_and_stops_on_sigint(tmp_path: Path, sockdir: Path) -> None:
    """Piped (a log, a script): whole screens one after another, JSON lines with --json; the
    exit status after SIGINT is the last one printed (edged is not running: FAILING, 2)."""
    config = tmp_path / "edge.toml"
    config.write_text(f'[control]\nsocket = "{sockdir}/control.sock"\n')
    for extra, marker in (([], "--- "), (["--json"], '{"edgectl_version"')):
        proc = subprocess.Popen(
            [*WATCH, "0.1", "--config", str(config), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        seen: list[str] = []
        while sum(line.startswith(marker) for line in seen) < 3:
            line = proc.stdout.readline()
            assert line, f"edgectl ended early: {proc.wait()} {proc.stderr and proc.stderr.read()}"
            seen.append(line)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        seen += out.splitlines(keepends=True)
        assert proc.returncode == 2, err
        assert err == "", "Ctrl-C is not an error"
        assert "\x1b[" not in "".join(seen), "no terminal control codes in a pipe"
        if extra:
            last = json.loads([line for line in seen if line.startswith("{")][-1])
            assert last["overall"] == "FAILING"
        else:
            assert "edged not running" in "".join(seen)


def test_status_camera_names_the_cameras_when_the_id_is_wrong(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    config = socket_config(tmp_path, data_dir, sockdir)
    with running_edged(config, tmp_path) as (_proc, notify):
        notify.wait_for("READY=1", timeout=30)
        one = edgectl("status", "--camera", "cam1", "--config", str(config))
        wrong = edgectl("status", "--camera", "cam9", "--config", str(config))
    assert "cam1 320x240" in one.stdout
    assert wrong.returncode == 2
    assert "no camera 'cam9'" in wrong.stderr and "cam1" in wrong.stderr


def test_status_reports_the_vault_and_a_recording_chain_that_does_not_verify(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    """The RECORD line shows the vault's size and retention, and a tampered recording found by
    the vault self-check becomes a FAIL finding (both were dead reads: edged reported no vault)."""
    config = socket_config(tmp_path, data_dir, sockdir)
    with running_edged(config, tmp_path) as (_proc, notify):
        notify.wait_for("READY=1", timeout=30)
        daemon = wait_until(
            lambda: (d := status_json(config)[1]["daemon"]) and d["vault"]["bytes_used"] > 0 and d,
            30,
            "the vault to hold recordings",
        )
        assert daemon["vault"]["retention_days"] == config_mod.load(config)[0].vault.retention_days
        assert daemon["vault"]["chain_ok"] is None, "no self-check ran yet"
        # What travels is exactly the typed model the readers are checked against.
        assert set(daemon) == set(DaemonStatus.__required_keys__)
        assert set(daemon["cameras"][0]) == set(CameraStatus.__required_keys__)
        assert set(daemon["cameras"][0]["capture"]) == set(CaptureStatus.__required_keys__)
        assert set(daemon["vault"]) == set(VaultStatus.__required_keys__)
        system = status_json(config)[1]["system"]
        assert set(system) == set(SystemStatus.__required_keys__)
        for part, model in (
            ("time", TimeStatus),
            ("memory", MemoryStatus),
            ("storage", StorageStatus),
        ):
            assert set(system[part]) == set(model.__required_keys__), part
        screen = edgectl("status", "--config", str(config)).stdout
        [record] = [line for line in screen.splitlines() if line.startswith("RECORD")]
        assert " GB, " in record and " d retention" in record, record

        # An attacker edits a recorded segment in place.
        segment = sorted(data_dir.rglob("*.seg"))[0]
        data = bytearray(segment.read_bytes())
        data[len(data) // 2] ^= 0xFF
        segment.write_bytes(bytes(data))
        selftest = edgectl("selftest", "--json", "--config", str(config))
        assert selftest.returncode != 0, selftest.stdout

        diag = edgectl("diag", "--json", "--config", str(config))
        assert diag.returncode == 2, diag.stdout + diag.stderr
        [chain] = [f for f in json.loads(diag.stdout) if f["summary"].startswith("recording chain")]
        assert chain["level"] == "FAIL" and chain["cause"], chain
        assert status_json(config)[1]["daemon"]["vault"]["chain_ok"] is False

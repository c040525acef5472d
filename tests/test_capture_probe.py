"""``edgectl camera probe`` and the report behind it: rates, gaps, errors, black and frozen
pictures, on real sources (synthetic scene, ffmpeg-made clips, a refused RTSP address)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edge.capture.probe import ProbeReport
from edge.cli.main import main

from .conftest import tool


def _config(tmp_path: Path, source: str = "synthetic") -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(
        f'[[cameras]]\nid = "door"\nsource = "{source}"\nwidth = 320\nheight = 180\nfps = 25\n',
        encoding="utf-8",
    )
    return path


def _probe(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["camera", "probe", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_probe_healthy_synthetic_camera(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _probe(capsys, "--config", str(_config(tmp_path)), "--seconds", "1.5")
    assert code == 0 and report["ok"] is True and report["problems"] == []
    assert report["camera"] == "door" and report["state"] == "running"
    assert isinstance(report["frames"], int) and report["frames"] >= 20
    fps = report["fps_measured"]
    assert isinstance(fps, float) and 15 <= fps <= 30
    assert report["frozen_frames"] == 0


def test_probe_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["camera", "probe", "--config", str(_config(tmp_path)), "--seconds", "0.5"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("camera door: synthetic street scene")
    assert out.rstrip().endswith("OK")


def test_probe_black_frozen_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = tmp_path / "covered.mkv"
    subprocess.run(
        [tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
         "-i", "color=c=black:size=320x180:rate=25", "-t", "1", "-c:v", "ffv1", str(clip)],
        check=True,
    )  # fmt: skip
    code, report = _probe(capsys, "--config", str(_config(tmp_path)), "--source", f"file:{clip}")
    assert code == 2 and report["state"] == "ended" and report["frames"] == 25
    problems = " ".join(report["problems"])  # type: ignore[arg-type]
    assert "black" in problems and "never changes" in problems
    assert report["input"] == "ffv1 320x180 25 fps"


def test_probe_refused_rtsp_never_shows_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "rtsp://installer:Hunter2-secret@127.0.0.1:9/cam"  # discard port: nobody answers
    code = main(
        ["camera", "probe", "--config", str(_config(tmp_path)), "--source", url,
         "--seconds", "1.5", "--json"]
    )  # fmt: skip
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 2 and report["ok"] is False and report["frames"] == 0
    assert report["state"] == "backoff" and "Connection refused" in report["reason"]
    assert report["source"] == "RTSP camera rtsp://127.0.0.1:9/cam"
    assert "Hunter2" not in captured.out + captured.err


def test_probe_rejects_a_bad_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["camera", "probe", "--config", str(_config(tmp_path)), "--source", "http://x/"])
    assert code == 2 and "--source must be" in capsys.readouterr().err


def _report(**changes: object) -> ProbeReport:
    base: dict[str, object] = {
        "source": "cam", "input": None, "width": 64, "height": 64, "fps_configured": 25.0,
        "seconds": 5.0, "state": "running", "reason": "delivering", "frames": 125,
        "fps_measured": 25.0, "first_frame_s": 0.1, "source_gaps": 0, "frames_lost": 0,
        "reconnects": 0, "luma_mean": 110.0, "frozen_frames": 0,
    }  # fmt: skip
    base.update(changes)
    return ProbeReport(**base)  # type: ignore[arg-type]


def test_report_findings() -> None:
    assert _report().problems() == [] and _report().ok
    assert "10.0 fps measured" in _report(fps_measured=10.0).problems()[0]
    assert "3 frame(s) lost in 2 gap(s)" in _report(source_gaps=2, frames_lost=3).problems()[0]
    assert "reconnection" in _report(reconnects=1).problems()[0]
    assert "black" in _report(luma_mean=17.0).problems()[0]
    assert "never changes" in _report(frozen_frames=124).problems()[0]
    silent = _report(frames=0, fps_measured=None, luma_mean=None, state="backoff")
    assert not silent.ok and silent.problems()[0].startswith("no frames (backoff")


def test_probe_of_an_unverified_rtsps_address_says_how_to_verify_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "rtsps://admin:s3cret@127.0.0.1:9/cam"
    code = main(["camera", "probe", "--config", str(_config(tmp_path)), "--source", url])
    err = capsys.readouterr().err
    assert code == 2 and "--tls-ca-file or --tls-fingerprint-sha256" in err
    assert "must be verified before its password is sent" in err and "s3cret" not in err

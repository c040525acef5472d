"""A real edged process: systemd notification, signals, reload, run-for, bad configuration."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import tool
from .daemon_util import export_and_open, running_edged, sealed_segments, write_config


def _segments(data_dir: Path) -> list[Path]:
    return sealed_segments(data_dir)


def _probe_frames(clip: Path) -> int:
    result = subprocess.run(
        [
            tool("ffprobe"),
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,codec_name,width,height",
            "-of",
            "json",
            str(clip),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    stream = json.loads(result.stdout)["streams"][0]
    assert stream["codec_name"] == "h264"
    assert (stream["width"], stream["height"]) == (320, 240)
    return int(stream["nb_read_frames"])


def test_ready_watchdog_and_sigterm_finishes_segment(tmp_path: Path, data_dir: Path) -> None:
    config = write_config(tmp_path / "edge.toml", data_dir)
    with running_edged(config, tmp_path, env={"WATCHDOG_USEC": "1000000"}) as (proc, notify):
        notify.wait_for("READY=1", timeout=30)
        notify.wait_for("WATCHDOG=1", timeout=10)
        deadline = time.monotonic() + 30
        while len(_segments(data_dir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_segments(data_dir)) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        notify.drain()
        assert "STOPPING=1" in notify.messages
        assert proc.stderr is not None
        log = proc.stderr.read()
    assert "stopped:" in log
    segments = _segments(data_dir)
    # Every segment, the last (finished on SIGTERM) included, decodes.
    clip = export_and_open(data_dir, config, tmp_path)  # the CSU key opens it, not the unit
    frames = _probe_frames(clip)
    assert frames >= 10 * len(segments) - 10
    assert not list(data_dir.rglob("*.tmp*")), "temporary files left behind"


def test_run_for_exits_zero_and_reports(tmp_path: Path, data_dir: Path) -> None:
    config = write_config(tmp_path / "edge.toml", data_dir)
    with running_edged(config, tmp_path, "--run-for", "3") as (proc, notify):
        assert proc.wait(timeout=60) == 0
        notify.drain()
    assert any(m.startswith("READY=1") for m in notify.messages)
    assert _segments(data_dir)


def test_data_dir_flag_overrides_config(tmp_path: Path) -> None:
    config = write_config(tmp_path / "edge.toml", tmp_path / "from-config")
    elsewhere = tmp_path / "from-flag"
    with running_edged(config, tmp_path, "--run-for", "2", "--data-dir", str(elsewhere)) as (
        proc,
        _notify,
    ):
        assert proc.wait(timeout=60) == 0
    assert _segments(elsewhere)
    assert not (tmp_path / "from-config").exists()


def test_relative_data_dir_flag_survives_a_lost_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A technician's `edged --data-dir data` from a shell: after the index is lost, edged
    must start again (recovery once built doubled paths, data/vault/data/vault/…)."""
    config = write_config(tmp_path / "edge.toml", tmp_path / "unused")
    monkeypatch.chdir(tmp_path)
    for run in range(2):
        (tmp_path / f"run{run}").mkdir()
        args = ("--run-for", "2", "--data-dir", "data")
        with running_edged(config, tmp_path / f"run{run}", *args) as (proc, _):
            assert proc.wait(timeout=60) == 0, f"run {run}"
        for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
            (tmp_path / "data" / "vault" / name).unlink(missing_ok=True)
    assert _segments(tmp_path / "data")
    assert not (tmp_path / "data" / "vault" / "data").exists()


def test_sighup_reloads_masks_and_keeps_config_when_invalid(tmp_path: Path, data_dir: Path) -> None:
    config = write_config(tmp_path / "edge.toml", data_dir)
    with running_edged(config, tmp_path) as (proc, notify):
        notify.wait_for("READY=1", timeout=30)
        original = config.read_text()
        config.write_text(original + "\nbogus_key = 1\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        config.write_text(original.replace("[0.55, 0.15]", "[0.05, 0.05]"))
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert proc.poll() is None, "edged died on reload"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
    assert f"configuration not reloaded, keeping the running one: {config}:" in log
    assert "bogus_key: unknown key" in log
    assert "privacy masks reloaded: 1 mask(s)" in log


def test_bad_config_refused_with_location(tmp_path: Path, data_dir: Path) -> None:
    config = write_config(tmp_path / "edge.toml", data_dir)
    config.write_text(config.read_text().replace("fps = 10", "fps = 0"))
    result = subprocess.run(
        [sys.executable, "-m", "edge.daemon", "--config", str(config), "--run-for", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78
    assert f"{config}:13: cameras[0].fps: Input should be greater than 0" in result.stderr
    assert not _segments(data_dir)

"""``edgectl bench capture --json`` prints one JSON object with its ratios (small clip here)."""

from __future__ import annotations

import json

import pytest

from edge.cli.main import main

from .conftest import tool


def test_bench_capture_json(capsys: pytest.CaptureFixture[str]) -> None:
    tool("ffmpeg")
    args = ["--seconds", "1", "--width", "320", "--height", "240", "--out-width", "160"]
    code = main(["bench", "capture", "--json", *args, "--out-height", "120"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "one JSON object on one line"
    result = json.loads(out)
    assert result["benchmark"] == "capture" and result["frames"] == 25
    assert result["delivered"] == "160x120 I420"
    for key in ("capture_vs_ffmpeg_cpu", "synthetic_vs_memcpy", "core_share_at_fps"):
        assert isinstance(result[key], float) and result[key] > 0

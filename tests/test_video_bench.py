"""``edgectl bench encode|pipeline --json`` run end to end on small inputs."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO, tool


def bench(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "bench", *args, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, "one JSON object on one line"
    result: dict[str, object] = json.loads(lines[0])
    return result


def test_bench_encode_reports_ratio_against_ffmpeg() -> None:
    tool("ffmpeg")
    result = bench("encode", "--width", "320", "--height", "240", "--frames", "30")
    assert result["benchmark"] == "encode"
    assert result["frames"] == 30
    assert result["segments"] == 1
    for key in ("encoder_fps", "ffmpeg_fps", "encode_vs_ffmpeg_fps", "encode_vs_ffmpeg_cpu"):
        value = result[key]
        assert isinstance(value, float) and value > 0, key
    assert str(result["ffmpeg_cli"]).startswith("ffmpeg version")


def test_bench_pipeline_reports_cpu_ratio_against_ffmpeg() -> None:
    tool("ffmpeg")
    result = bench("pipeline", "--width", "320", "--height", "240", "--seconds", "2")
    assert result["benchmark"] == "pipeline"
    assert result["frames"] == 50
    assert result["segments"] == result["ffmpeg_segments"] == 1
    coverage = result["mask_coverage"]
    assert isinstance(coverage, float) and 0.1 < coverage < 0.3
    for key in ("pipeline_cpu_s", "ffmpeg_cpu_s", "pipeline_vs_ffmpeg_cpu", "pipeline_fps"):
        value = result[key]
        assert isinstance(value, float) and value > 0, key
    stages = result["pipeline_stage_wall_s"]
    assert isinstance(stages, dict) and set(stages) == {"capture", "mask", "encode", "sink"}
    # The whole path on I420 frames against the encoder alone on the same frames.
    for key in ("encoder_cpu_s", "pipeline_i420_cpu_s", "pipeline_vs_encoder_cpu"):
        value = result[key]
        assert isinstance(value, float) and value > 0, key
    assert result["pipeline_vs_encoder_cpu_goal"] == "<= 1.05"

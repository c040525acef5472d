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
    result = bench(
        "pipeline",
        "--width",
        "320",
        "--height",
        "240",
        "--seconds",
        "2",
        "--cameras",
        "1,2",
        "--repeat",
        "2",
    )
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
    # The Media Signing SEIs: one certificate SEI for the one segment, measured, small.
    assert result["media_signing_seis"] == 1
    share = result["media_signing_vs_pipeline_cpu"]
    assert isinstance(share, float) and 0 < share < 0.05
    # The whole path on I420 frames against the encoder alone on the same frames.
    for key in ("encoder_cpu_s", "pipeline_i420_cpu_s", "pipeline_vs_encoder_cpu"):
        value = result[key]
        assert isinstance(value, float) and value > 0, key
    assert result["pipeline_vs_encoder_cpu_goal"] == "<= 1.05"
    spread = result["pipeline_vs_encoder_cpu_range"]
    median = result["pipeline_vs_encoder_cpu"]
    assert isinstance(spread, list) and isinstance(median, float)
    assert 0 < spread[0] <= median <= spread[1]
    # Two cameras at once against one: CPU per camera and its growth, goal beside it.
    per_camera = result["cpu_per_camera_s"]
    assert isinstance(per_camera, dict) and set(per_camera) == {"1", "2"}
    assert all(isinstance(v, float) and v > 0 for v in per_camera.values())
    growth = result["per_camera_growth_vs_1"]
    assert isinstance(growth, dict) and set(growth) == {"2"}
    assert result["per_camera_growth_goal"] == "<= 1.05"
    # The machine it ran on, and how busy it was.
    for key in ("cpu_model", "cpu_cores", "ram_mib", "load_average_at_start"):
        assert result[key], key
    assert "pi_model" in result


def test_cpu_model_of_a_pc_and_of_a_raspberry_pi() -> None:
    from edge.bench.machine import cpu_model

    pc = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n"
    assert cpu_model(pc) == "Intel(R) Xeon(R) CPU @ 2.20GHz"
    pi = (
        "processor\t: 0\nBogoMIPS\t: 108.00\nCPU part\t: 0xd08\n\n"
        "Revision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    )
    assert cpu_model(pi) == "Raspberry Pi 4 Model B Rev 1.4"

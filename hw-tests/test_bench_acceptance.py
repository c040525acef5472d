"""Bench acceptance of a Raspberry Pi unit: a 1080p25 camera recorded for ten minutes.

Pi 4: the hardware encoder (h264_v4l2m2m); Pi 5: libx264 (it has no hardware encoder). Each
test skips with its reason on any other machine. The unit's own camera is recorded when
picamera2 sees one, else the synthetic scene at the same size and rate.

Checks, through the benchmarks an installer can also run by hand:

- ``edgectl bench memory --scenarios 1080p25 --seconds 600``: a real edged records without
  a single dropped or lost frame; its steady resident set is at most 150 MiB and does not grow
  (at most 5 MiB between the first and last thirds of the run); the frame pool stays within
  its budget;
- ``edgectl bench pipeline --cameras 1,2,4`` (libx264, the reference encoder on both boards):
  the whole recording path costs at most 1.05 × the encoder alone, and a camera's CPU grows by
  at most 5 % when four record at once.

``EDGE_HW_BENCH_SECONDS`` shortens the recording (a quick rehearsal; acceptance is 600).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge.bench.machine import DEVICE_TREE_MODEL
from edge.config import EncoderCodec
from tests.conftest import not_applicable

SECONDS = int(os.environ.get("EDGE_HW_BENCH_SECONDS", "600"))
REPO = Path(__file__).resolve().parents[1]


def _board() -> str:
    try:
        model = DEVICE_TREE_MODEL.read_bytes().decode(errors="replace").strip("\x00 \n")
    except OSError:
        not_applicable(f"not a Raspberry Pi ({DEVICE_TREE_MODEL} does not exist)")
    if not model.startswith("Raspberry Pi"):
        not_applicable(f"not a Raspberry Pi ({model})")
    return model


def _camera_source() -> str:
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "synthetic"
    return "picamera2" if Picamera2.global_camera_info() else "synthetic"


def _bench(*args: str, timeout: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "bench", *args, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _accept(codec: EncoderCodec) -> None:
    memory = _bench(
        "memory",
        "--scenarios",
        "1080p25",
        "--seconds",
        str(SECONDS),
        "--codec",
        codec.value,
        "--source",
        _camera_source(),
        timeout=SECONDS + 300,
    )
    run = memory["1080p25"]
    print(json.dumps(memory, indent=1))  # the figures go in the unit's acceptance record
    assert run["frames_encoded"] >= 25 * SECONDS * 0.7, "recording did not keep up"
    assert run["frames_dropped"] == 0, f"{run['frames_dropped']} frame(s) dropped"
    assert run["frames_lost_by_source"] == 0, "the camera lost frames"
    assert run["edged_rss_mib"] <= 150, f"edged holds {run['edged_rss_mib']} MiB"
    assert run["growth_mib"] <= 5, f"edged grew by {run['growth_mib']} MiB"
    assert run["frame_peak_mib"] <= run["frame_budget_mib"]

    pipeline = _bench("pipeline", "--cameras", "1,2,4", timeout=1800)
    print(json.dumps(pipeline, indent=1))
    assert pipeline["pipeline_vs_encoder_cpu"] <= 1.05
    for cameras, growth in pipeline["per_camera_growth_vs_1"].items():
        assert growth <= 1.05, f"{cameras} cameras: CPU per camera × {growth}"


def test_pi4_records_1080p25_with_its_hardware_encoder() -> None:
    board = _board()
    if not board.startswith("Raspberry Pi 4"):
        not_applicable(f"a Raspberry Pi 4 test; this is a {board}")
    _accept(EncoderCodec.V4L2M2M)


def test_pi5_records_1080p25_with_libx264() -> None:
    board = _board()
    if not board.startswith("Raspberry Pi 5"):
        not_applicable(f"a Raspberry Pi 5 test; this is a {board}")
    _accept(EncoderCodec.LIBX264)

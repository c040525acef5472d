"""The FFmpeg command-line tool as the baseline of the video benchmarks.

Both sides of a comparison use the same libx264 settings: the preset, bit rate and GOP the
recorder uses (:func:`edge.video.encoder.x264_options`) and a forced IDR every segment.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass

from ..config import EncoderConfig
from ..errors import EdgeError


@dataclass(frozen=True, slots=True)
class Measured:
    wall_s: float
    cpu_s: float
    """User + system CPU seconds."""


def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise EdgeError("the ffmpeg command is needed as the benchmark's baseline (apt ffmpeg)")
    return path


def ffmpeg_version() -> str:
    out = subprocess.run(
        [ffmpeg_path(), "-version"], capture_output=True, text=True, check=True, timeout=30
    )
    first = out.stdout.splitlines()[0] if out.stdout else "ffmpeg"
    return first.split(" Copyright")[0]


def x264_cli_args(cfg: EncoderConfig, gop: int) -> list[str]:
    """ffmpeg CLI options equal to what :class:`SegmentEncoder` gives libx264."""
    from ..video.encoder import x264_options  # local: keeps ``bench --help`` light

    opts = x264_options(cfg, gop)
    return [
        "-c:v",
        "libx264",
        "-preset",
        opts["preset"],
        "-tune",
        opts["tune"],
        "-forced-idr",
        opts["forced-idr"],
        "-x264-params",
        opts["x264-params"],
        "-b:v",
        f"{cfg.bitrate_kbps}k",
        "-g",
        str(gop),
        "-bf",
        "0",
        "-force_key_frames",
        f"expr:gte(t,n_forced*{cfg.segment_seconds:g})",
        "-pix_fmt",
        "yuv420p",
    ]


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_measured(cmd: list[str], *, timeout_s: float = 900) -> Measured:
    """Run a child to completion; its wall time and the CPU time it (and its children) used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise EdgeError(f"{cmd[0]} failed ({proc.returncode}): {' / '.join(tail)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(wall, cpu)


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """The encoder settings both sides of a comparison use (defaults: the configuration's)."""
    parser.add_argument(
        "--preset", default=EncoderConfig().preset, help="libx264 preset (default: config's)"
    )
    parser.add_argument(
        "--bitrate-kbps", type=int, default=EncoderConfig().bitrate_kbps, help="bit rate"
    )
    parser.add_argument(
        "--segment-seconds", type=float, default=EncoderConfig().segment_seconds, help="segment"
    )

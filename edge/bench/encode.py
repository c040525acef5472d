"""encode: 1080p frames per second through the recorder's H.264 CMAF encoder alone.

Synthetic frames (a seeded textured street-like background, moving blocks, sensor noise) are
prepared in memory first; then the same frames go through :class:`SegmentEncoder` in this
process and, as the baseline, through the ``ffmpeg`` CLI with the same libx264 settings
reading them raw from a file. ``encode_vs_ffmpeg_fps`` > 1 means we are faster than the CLI,
``encode_vs_ffmpeg_cpu`` < 1 that we spend less CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import EncoderConfig
from ..frames import Frame
from .ffmpeg_cli import (
    add_encoder_arguments,
    ffmpeg_path,
    ffmpeg_version,
    run_measured,
    self_cpu_s,
    x264_cli_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=1920, help="frame width (default 1920)")
    parser.add_argument("--height", type=int, default=1080, help="frame height (default 1080)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    parser.add_argument("--frames", type=int, default=100, help="frames to encode (default 100)")
    add_encoder_arguments(parser)


def synthetic_frames(width: int, height: int, count: int, fps: float, seed: int = 7) -> list[Frame]:
    """Deterministic frames with texture, motion and noise, so the encoder does real work."""
    rng = np.random.default_rng(seed)
    # Blocky texture (façade-like) at 1/8 resolution, scaled up, plus fine detail.
    coarse = rng.integers(40, 200, size=(height // 8 + 1, width // 8 + 1), dtype=np.uint8)
    background = np.kron(coarse, np.ones((8, 8), dtype=np.uint8))[:height, :width]
    background = (
        background // 2 + rng.integers(0, 40, size=(height, width), dtype=np.uint8)
    ).astype(np.uint8)
    noise = [rng.integers(-3, 4, size=(height, width), dtype=np.int16) for _ in range(4)]
    chroma_u = rng.integers(100, 156, size=(height // 2, width // 2), dtype=np.uint8)
    chroma_v = rng.integers(100, 156, size=(height // 2, width // 2), dtype=np.uint8)
    frames = []
    period_ns = round(1e9 / fps)
    now = time.time_ns()
    box = max(16, height // 6) & ~1
    for i in range(count):
        frame = Frame.blank(
            width, height, index=i, mono_ns=i * period_ns, wall_ns=now + i * period_ns
        )
        frame.y[...] = np.clip(background + noise[i % 4], 0, 255).astype(np.uint8)
        frame.u[...] = chroma_u
        frame.v[...] = chroma_v
        for k in range(4):  # objects moving at different speeds and heights
            x = (i * (6 + 5 * k) + k * width // 4) % max(1, width - box)
            y = (height // 5) * (k + 1) % max(1, height - box)
            frame.y[y : y + box, x : x + box // 2] = 60 + 40 * k
        frames.append(frame)
    return frames


def run(args: argparse.Namespace) -> dict[str, Any]:
    from edge.video import SegmentEncoder

    cfg = EncoderConfig(
        preset=args.preset, bitrate_kbps=args.bitrate_kbps, segment_seconds=args.segment_seconds
    )
    frames = synthetic_frames(args.width, args.height, args.frames, args.fps)

    encoder = SegmentEncoder("bench", args.width, args.height, args.fps, cfg)
    cpu0 = self_cpu_s()
    start = time.perf_counter()
    segments = []
    for frame in frames:
        segments += encoder.encode(frame)
    segments += encoder.flush()
    wall = time.perf_counter() - start
    cpu = self_cpu_s() - cpu0
    if sum(s.frame_count for s in segments) != len(frames):
        raise AssertionError("encoder lost frames")  # a benchmark of a broken encoder is void
    media_bytes = sum(len(s.media) for s in segments)

    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        raw = Path(tmp) / "frames.yuv"
        with raw.open("wb") as f:
            for frame in frames:
                f.write(frame.data.tobytes())
        cmd = [
            ffmpeg_path(), "-nostdin", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{args.width}x{args.height}",
            "-r", f"{args.fps:g}", "-i", str(raw),
            *x264_cli_args(cfg, encoder.gop),
            "-f", "mp4", "-movflags", "frag_keyframe+empty_moov+default_base_moof",
            str(Path(tmp) / "out.mp4"),
        ]  # fmt: skip
        baseline = run_measured(cmd)

    ours_fps = len(frames) / wall
    ffmpeg_fps = len(frames) / baseline.wall_s
    return {
        "width": args.width,
        "height": args.height,
        "frames": len(frames),
        "preset": cfg.preset,
        "bitrate_kbps": cfg.bitrate_kbps,
        "segments": len(segments),
        "encoder_fps": round(ours_fps, 2),
        "encoder_wall_s": round(wall, 3),
        "encoder_cpu_s": round(cpu, 3),
        "encoder_mbit_s": round(media_bytes * 8 / (len(frames) / args.fps) / 1e6, 3),
        "ffmpeg_fps": round(ffmpeg_fps, 2),
        "ffmpeg_wall_s": round(baseline.wall_s, 3),
        "ffmpeg_cpu_s": round(baseline.cpu_s, 3),
        "encode_vs_ffmpeg_fps": round(ours_fps / ffmpeg_fps, 3),
        "encode_vs_ffmpeg_cpu": round(cpu / baseline.cpu_s, 3),
        "realtime_factor": round(ours_fps / args.fps, 2),
        "ffmpeg_cli": ffmpeg_version(),
    }

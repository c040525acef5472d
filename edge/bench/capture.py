"""capture: CPU of decoding a camera stream into I420 frames, against the FFmpeg CLI doing the same.

An H.264 clip (``testsrc2``, like a camera's stream) is made with the ffmpeg CLI in the run.
Ours: :class:`~edge.capture.pyav.PyAVSource` reads it as fast as it can (decode, scale to the
output size, full-to-limited range, one contiguous I420 buffer per frame). Baseline: one
``ffmpeg`` process decoding the same clip through the same bicubic scaler to raw I420.
``capture_vs_ffmpeg_cpu`` ≤ 1.0 means capture costs no more than FFmpeg itself;
``core_share_at_fps`` is the part of one core capture needs at the clip's frame rate (how many
cameras of this kind one core can feed). The synthetic scene's render time is reported against
one memcpy of the frame (``synthetic_vs_memcpy``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..frames import i420_size
from .ffmpeg_cli import ffmpeg_path, ffmpeg_version, run_measured, self_cpu_s


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=1920, help="clip width (default 1920)")
    parser.add_argument("--height", type=int, default=1080, help="clip height (default 1080)")
    parser.add_argument("--fps", type=int, default=25, help="clip frame rate (default 25)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    parser.add_argument(
        "--out-width", type=int, default=None, help="frame width delivered (default: the clip's)"
    )
    parser.add_argument(
        "--out-height", type=int, default=None, help="frame height delivered (default: clip's)"
    )


def _memcpy_s(size: int, repeats: int = 50) -> float:
    src = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    from edge.capture import PyAVSource, SyntheticSource

    w, h, fps = args.width, args.height, args.fps
    out_w = args.out_width or w
    out_h = args.out_height or h
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp_name:
        clip = Path(tmp_name) / "clip.mp4"
        scene = f"testsrc2=size={w}x{h}:rate={fps}:duration={args.seconds:g}"
        run_measured(
            [
                ffmpeg_path(), "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", scene,
                "-c:v", "libx264", "-preset", "veryfast", "-b:v", "6M", "-g", str(2 * fps),
                "-pix_fmt", "yuv420p", str(clip),
            ]
        )  # fmt: skip

        # --- ours ---
        source = PyAVSource(f"file:{clip}", out_w, out_h, fps, realtime=False)
        cpu0 = self_cpu_s()
        t0 = time.perf_counter()
        source.open()
        frames = 0
        while source.read() is not None:
            frames += 1
        source.close()
        wall = time.perf_counter() - t0
        cpu = self_cpu_s() - cpu0

        # --- baseline: the ffmpeg CLI decoding and scaling to raw I420 ---
        baseline = run_measured(
            [
                ffmpeg_path(), "-nostdin", "-v", "error", "-y", "-i", str(clip),
                "-vf", f"scale={out_w}:{out_h}:flags=bicubic:out_range=tv",
                "-pix_fmt", "yuv420p", "-f", "rawvideo", "/dev/null",
            ]
        )  # fmt: skip

    # --- the synthetic scene at the delivered size ---
    synthetic = SyntheticSource(out_w, out_h, fps, pedestrians=8, vehicles=4, realtime=False)
    rendered = max(50, min(500, frames))
    start = time.perf_counter()
    for index in range(rendered):
        synthetic.render(index)
    render_s = (time.perf_counter() - start) / rendered
    memcpy_s = _memcpy_s(i420_size(out_w, out_h))

    return {
        "clip": f"h264 {w}x{h} {fps} fps, {args.seconds:g} s",
        "delivered": f"{out_w}x{out_h} I420",
        "frames": frames,
        "capture_cpu_s": round(cpu, 3),
        "capture_wall_s": round(wall, 3),
        "capture_fps": round(frames / wall, 1),
        "capture_cpu_ms_per_frame": round(1000 * cpu / frames, 3),
        "core_share_at_fps": round(cpu / frames * fps, 3),
        "ffmpeg_cpu_s": round(baseline.cpu_s, 3),
        "ffmpeg_wall_s": round(baseline.wall_s, 3),
        "capture_vs_ffmpeg_cpu": round(cpu / baseline.cpu_s, 3),
        "synthetic_ms_per_frame": round(1000 * render_s, 3),
        "memcpy_ms": round(1000 * memcpy_s, 3),
        "synthetic_vs_memcpy": round(render_s / memcpy_s, 2),
        "ffmpeg_cli": ffmpeg_version(),
    }

"""pipeline: CPU seconds of the whole recording path against the FFmpeg CLI doing the same.

A 1080p clip (``testsrc2``, H.264, like a camera's stream) is generated with the ffmpeg CLI in
the run. Our side runs the recorder's stages one after the other in this process: file source
(:class:`~edge.capture.pyav.PyAVSource`, decode and I420 conversion) → privacy masking
(:class:`~edge.privacy.masker.PrivacyMasker`) → H.264 CMAF segments
(:class:`~edge.video.encoder.SegmentEncoder`) → :class:`~edge.video.dirsink.DirectorySink`
(atomic, fsynced files), with the ONVIF Media Signing SEIs edged adds (a fresh Ed25519 key;
``media_signing_*``: the thread CPU of hashing and signing, as a share of the whole path, and
the SEIs' bytes as a share of the video). The baseline is one ``ffmpeg`` process: decode →
overlay of the same masks as a PNG with alpha → libx264 with the same settings and GOP → HLS
fMP4 segments.
CPU is user + system time (``RUSAGE_SELF`` for us, ``RUSAGE_CHILDREN`` for ffmpeg);
``pipeline_vs_ffmpeg_cpu`` ≤ 1.0 means the recorder costs no more than FFmpeg itself.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import EncoderConfig, PrivacyMaskConfig
from .ffmpeg_cli import (
    add_encoder_arguments,
    ffmpeg_path,
    ffmpeg_version,
    run_measured,
    self_cpu_s,
    x264_cli_args,
)

#: Masks of the benchmark: a façade window band, a concave shop front and a small sign
#: (about a fifth of the frame, as on a typical street camera).
BENCH_MASKS = [
    PrivacyMaskConfig(
        name="upper windows", points=[(0.55, 0.05), (0.98, 0.02), (0.99, 0.30), (0.56, 0.34)]
    ),
    PrivacyMaskConfig(
        name="shop front",
        points=[(0.05, 0.40), (0.30, 0.38), (0.30, 0.55), (0.18, 0.50), (0.06, 0.62)],
    ),
    PrivacyMaskConfig(name="door", points=[(0.80, 0.55), (0.88, 0.55), (0.87, 0.80)]),
]

#: RGB grey that BT.601 limited range turns into the masker's luma 40 (chroma neutral).
_MASK_GREY = round((40 - 16) * 255 / 219)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=1920, help="clip width (default 1920)")
    parser.add_argument("--height", type=int, default=1080, help="clip height (default 1080)")
    parser.add_argument("--fps", type=int, default=25, help="clip frame rate (default 25)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    add_encoder_arguments(parser)


def _make_clip(path: Path, args: argparse.Namespace) -> None:
    scene = f"testsrc2=size={args.width}x{args.height}:rate={args.fps}:duration={args.seconds:g}"
    run_measured(
        [
            ffmpeg_path(), "-nostdin", "-v", "error", "-y", "-f", "lavfi",
            "-i", scene,
            "-c:v", "libx264", "-preset", "veryfast", "-b:v", "6M", "-g", str(2 * args.fps),
            "-pix_fmt", "yuv420p", str(path),
        ]
    )  # fmt: skip


def _write_mask_png(path: Path, luma_mask: np.ndarray[Any, np.dtype[np.bool_]]) -> None:
    from PIL import Image

    h, w = luma_mask.shape
    rgba = np.zeros((h, w, 4), dtype=np.uint8)
    rgba[luma_mask] = (_MASK_GREY, _MASK_GREY, _MASK_GREY, 255)
    Image.fromarray(rgba, mode="RGBA").save(path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from edge.capture import PyAVSource
    from edge.privacy import PrivacyMasker
    from edge.video import DirectorySink, MediaSegment, SegmentEncoder
    from edge.video.mediasigning import ED25519_OID, MediaSigner, SigningIdentity

    cfg = EncoderConfig(
        preset=args.preset, bitrate_kbps=args.bitrate_kbps, segment_seconds=args.segment_seconds
    )
    w, h, fps = args.width, args.height, args.fps
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        clip = tmp / "clip.mp4"
        _make_clip(clip, args)
        masker = PrivacyMasker(BENCH_MASKS, w, h)

        # --- ours: every stage of the recording path, in this process ---
        stage = dict.fromkeys(("capture", "mask", "encode", "sink"), 0.0)
        frames = 0
        segments: list[MediaSegment] = []
        sink = DirectorySink(tmp / "segments")
        cpu0 = self_cpu_s()
        t0 = time.perf_counter()
        source = PyAVSource(f"file:{clip}", w, h, fps, realtime=False)
        source.open()
        key = ed25519.Ed25519PrivateKey.generate()
        signer = MediaSigner(SigningIdentity(key.sign, ED25519_OID, None, "bench", "bench", "edge"))
        encoder = SegmentEncoder("bench", w, h, fps, cfg, signer=signer)
        while True:
            a = time.perf_counter()
            frame = source.read()
            b = time.perf_counter()
            stage["capture"] += b - a
            if frame is None:
                break
            frames += 1
            masker.apply(frame)
            c = time.perf_counter()
            stage["mask"] += c - b
            done = encoder.encode(frame)
            d = time.perf_counter()
            stage["encode"] += d - c
            for seg in done:
                sink.write(seg)
            stage["sink"] += time.perf_counter() - d
            segments += done
        a = time.perf_counter()
        last = encoder.flush()
        b = time.perf_counter()
        for seg in last:
            sink.write(seg)
        stage["encode"] += b - a
        stage["sink"] += time.perf_counter() - b
        segments += last
        source.close()
        sink.close()
        wall = time.perf_counter() - t0
        cpu = self_cpu_s() - cpu0
        if sum(s.frame_count for s in segments) != frames:
            raise AssertionError("recording path lost frames")  # void benchmark otherwise

        # --- baseline: the ffmpeg CLI doing the equivalent work ---
        mask_png = tmp / "mask.png"
        _write_mask_png(mask_png, masker.luma_mask())
        hls = tmp / "hls"
        hls.mkdir()
        baseline = run_measured(
            [
                ffmpeg_path(), "-nostdin", "-v", "error", "-y",
                "-i", str(clip), "-i", str(mask_png),
                "-filter_complex", "[0:v][1:v]overlay=format=yuv420,format=yuv420p[v]",
                "-map", "[v]", "-r", str(fps),
                *x264_cli_args(cfg, encoder.gop),
                "-f", "hls", "-hls_time", f"{cfg.segment_seconds:g}",
                "-hls_segment_type", "fmp4", "-hls_playlist_type", "vod",
                "-hls_segment_filename", str(hls / "seg-%05d.m4s"),
                str(hls / "index.m3u8"),
            ]
        )  # fmt: skip
        ffmpeg_segments = len(list(hls.glob("seg-*.m4s")))

    return {
        "width": w,
        "height": h,
        "fps": fps,
        "clip_seconds": args.seconds,
        "frames": frames,
        "preset": cfg.preset,
        "mask_coverage": round(masker.coverage, 3),
        "segments": len(segments),
        "pipeline_cpu_s": round(cpu, 3),
        "pipeline_wall_s": round(wall, 3),
        "pipeline_fps": round(frames / wall, 2),
        "pipeline_stage_wall_s": {k: round(v, 3) for k, v in stage.items()},
        "media_signing_cpu_s": round(signer.cpu_s, 4),
        "media_signing_vs_pipeline_cpu": round(signer.cpu_s / cpu, 5),
        "media_signing_seis": signer.seis,
        "media_signing_vs_video_bytes": round(
            signer.sei_bytes / max(1, sum(len(s.media) for s in segments)), 5
        ),
        "ffmpeg_cpu_s": round(baseline.cpu_s, 3),
        "ffmpeg_wall_s": round(baseline.wall_s, 3),
        "ffmpeg_fps": round(frames / baseline.wall_s, 2),
        "ffmpeg_segments": ffmpeg_segments,
        "pipeline_vs_ffmpeg_cpu": round(cpu / baseline.cpu_s, 3),
        "pipeline_vs_ffmpeg_wall": round(wall / baseline.wall_s, 3),
        "ffmpeg_cli": ffmpeg_version(),
    }

"""pipeline: CPU of the whole recording path against the encoder alone and the FFmpeg CLI.

A 1080p clip (``testsrc2``, H.264, like a camera's stream) is generated with the ffmpeg CLI in
the run, and the same pictures as raw I420 (NUT rawvideo: what a camera giving I420 at the
configured size hands over, decoded for free). Measured, in this process, CPU being user +
system time (``RUSAGE_SELF``; ``RUSAGE_CHILDREN`` for ffmpeg):

- the **whole path** on the raw clip: :class:`~edge.capture.pyav.PyAVSource` with a
  :class:`~edge.framepool.FramePool` (one copy into a pooled buffer) → privacy masking →
  :class:`~edge.video.encoder.SegmentEncoder` → :class:`~edge.video.dirsink.DirectorySink`
  (atomic, fsynced files), with the ONVIF Media Signing SEIs edged adds (a fresh Ed25519
  key), less the CPU of reading the clip's packets from the page cache (measured alone: a
  camera's DMA does it for free);
- the **encoder alone** on the same masked frames: feeding them (demux, copy, mask) then
  encoding, less the same feeding without encoding, so only the encoder's CPU is left;
- the whole path on the H.264 clip (decoding included), stage by stage, against one
  ``ffmpeg`` process doing the equivalent: decode → overlay of the same masks as a PNG with
  alpha → libx264 with the same settings and GOP → HLS fMP4 segments.

``pipeline_vs_encoder_cpu`` (goal ≤ 1.05) is what the recorder adds around the encoder (the
median of ``--repeat`` alternated measurements, their range beside it);
``pipeline_vs_ffmpeg_cpu`` ≤ 1.0 means the recorder costs no more than FFmpeg itself. With
``--cameras 1,2,4``, N cameras record the raw clip at once (a thread each, one frame pool):
``cpu_per_camera_s`` by N and ``per_camera_growth_vs_1`` (goal ≤ 1.05). ``media_signing_*``:
the thread CPU of hashing and signing in the H.264 run, as a share of its whole path, and the
SEIs' bytes as a share of the video.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import EncoderConfig, PrivacyMaskConfig
from ..errors import EdgeError
from ..framepool import DEFAULT_BUDGET_MIB, MIB, FramePool
from .ffmpeg_cli import (
    add_encoder_arguments,
    ffmpeg_path,
    ffmpeg_version,
    run_measured,
    self_cpu_s,
    x264_cli_args,
)

if TYPE_CHECKING:
    from ..video.encoder import SegmentEncoder
    from ..video.mediasigning import MediaSigner

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
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="whole path and encoder alone measured this many times, median kept (default 3)",
    )
    parser.add_argument(
        "--cameras",
        default="1",
        help="camera counts to measure CPU per camera for, e.g. 1,2,4 (default 1: no scaling)",
    )
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


#: What the whole path may cost over the encoder alone.
GOAL_VS_ENCODER = 1.05
#: How much a camera's CPU may grow when it shares the unit with others.
GOAL_PER_CAMERA_GROWTH = 1.05


def _make_raw(clip: Path, raw: Path) -> None:
    """The clip's pictures as raw I420 in NUT: the decoder then hands them over as they are."""
    run_measured(
        [
            ffmpeg_path(), "-nostdin", "-v", "error", "-y", "-i", str(clip),
            "-c:v", "rawvideo", "-pix_fmt", "yuv420p", "-f", "nut", str(raw),
        ]
    )  # fmt: skip


@dataclass
class PathRun:
    """One camera's recording path over a clip: frames, segments, wall time per stage."""

    frames: int = 0
    segments: int = 0
    frames_recorded: int = 0
    media_bytes: int = 0
    gop: int = 0
    stage: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("capture", "mask", "encode", "sink"), 0.0)
    )


def record_clip(
    clip: Path,
    out: Path,
    w: int,
    h: int,
    fps: int,
    cfg: EncoderConfig,
    pool: FramePool,
    signer: MediaSigner | None = None,
) -> PathRun:
    """The recording path of edged over ``clip``, stage by stage, in the calling thread:
    source (frames from ``pool``) → mask → encode → sink; every frame released as edged does."""
    from edge.capture import PyAVSource
    from edge.privacy import PrivacyMasker
    from edge.video import DirectorySink, SegmentEncoder

    masker = PrivacyMasker(BENCH_MASKS, w, h)
    result = PathRun()
    stage = result.stage
    sink = DirectorySink(out)
    source = PyAVSource(f"file:{clip}", w, h, fps, realtime=False)
    source.pool = pool
    source.open()
    encoder = SegmentEncoder("bench", w, h, fps, cfg, signer=signer or _signer())
    result.gop = encoder.gop
    while True:
        a = time.perf_counter()
        frame = source.read()
        b = time.perf_counter()
        stage["capture"] += b - a
        if frame is None:
            break
        result.frames += 1
        masker.apply(frame)
        c = time.perf_counter()
        stage["mask"] += c - b
        done = encoder.encode(frame)
        pool.release(frame)
        d = time.perf_counter()
        stage["encode"] += d - c
        for seg in done:
            sink.write(seg)
        stage["sink"] += time.perf_counter() - d
        result.segments += len(done)
        result.frames_recorded += sum(seg.frame_count for seg in done)
        result.media_bytes += sum(len(seg.media) for seg in done)
    a = time.perf_counter()
    last = encoder.flush()
    b = time.perf_counter()
    for seg in last:
        sink.write(seg)
    stage["encode"] += b - a
    stage["sink"] += time.perf_counter() - b
    result.segments += len(last)
    result.frames_recorded += sum(seg.frame_count for seg in last)
    result.media_bytes += sum(len(seg.media) for seg in last)
    source.close()
    sink.close()
    if result.frames_recorded != result.frames:
        raise AssertionError("recording path lost frames")  # void benchmark otherwise
    return result


def _signer() -> MediaSigner:
    """A Media Signing signer as edged has one (a fresh Ed25519 key, no certificate chain)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from edge.video.mediasigning import ED25519_OID, MediaSigner, SigningIdentity

    key = ed25519.Ed25519PrivateKey.generate()
    return MediaSigner(SigningIdentity(key.sign, ED25519_OID, None, "bench", "bench", "edge"))


def _feed(raw: Path, w: int, h: int, encoder: SegmentEncoder | None) -> int:
    """The raw clip's frames, masked, into ``encoder`` (or nowhere): demux, one copy into a
    reused frame, mask. Returns the number of frames."""
    import av

    from edge.frames import Frame
    from edge.privacy import PrivacyMasker

    masker = PrivacyMasker(BENCH_MASKS, w, h)
    ring = [Frame.blank(w, h) for _ in range(2)]
    count = 0
    period_ns = 40_000_000
    with av.open(str(raw)) as container:
        for packet in container.demux(video=0):
            if packet.size == 0:
                continue
            frame = ring[count % 2]
            np.copyto(frame.data, np.frombuffer(memoryview(packet), dtype=np.uint8))
            frame.index, frame.mono_ns = count, count * period_ns
            masker.apply(frame)
            if encoder is not None:
                encoder.encode(frame)
            count += 1
    if encoder is not None:
        encoder.flush()
    return count


def delivery_cpu(raw: Path) -> float:
    """CPU seconds of reading the raw clip's packets from the page cache: what a camera's DMA
    does for free, measured alone so it can be left out of the path's cost."""
    import av

    cpu0 = self_cpu_s()
    with av.open(str(raw)) as container:
        for _packet in container.demux(video=0):
            pass
    return self_cpu_s() - cpu0


def encoder_alone_cpu(raw: Path, w: int, h: int, fps: int, cfg: EncoderConfig) -> float:
    """CPU seconds of :class:`SegmentEncoder` alone on the raw clip's masked frames."""
    from edge.video import SegmentEncoder

    cpu0 = self_cpu_s()
    _feed(raw, w, h, None)
    feeding = self_cpu_s() - cpu0
    cpu0 = self_cpu_s()
    _feed(raw, w, h, SegmentEncoder("bench", w, h, fps, cfg))
    return self_cpu_s() - cpu0 - feeding


def _camera_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1 or counts[-1] > 16:
        raise EdgeError(f"--cameras {text!r}: camera counts between 1 and 16, e.g. 1,2,4")
    return counts


def cameras_cpu(
    raw: Path, out: Path, n: int, w: int, h: int, fps: int, cfg: EncoderConfig, delivery: float
) -> float:
    """CPU seconds per camera of ``n`` cameras recording the raw clip at once, one thread each
    (as edged runs them), their frames from one pool; each camera's file reading left out."""
    pool = FramePool.of_mib(DEFAULT_BUDGET_MIB)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            record_clip(raw, out / f"n{n}-cam{i}", w, h, fps, cfg, pool)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    cpu0 = self_cpu_s()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu = self_cpu_s() - cpu0
    if errors:
        raise errors[0]
    return cpu / n - delivery


def run(args: argparse.Namespace) -> dict[str, Any]:
    from edge.privacy import PrivacyMasker

    cfg = EncoderConfig(
        preset=args.preset, bitrate_kbps=args.bitrate_kbps, segment_seconds=args.segment_seconds
    )
    w, h, fps = args.width, args.height, args.fps
    counts = _camera_counts(args.cameras)
    pool = FramePool.of_mib(DEFAULT_BUDGET_MIB)
    scaling: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        clip = tmp / "clip.mp4"
        raw = tmp / "clip.nut"
        _make_clip(clip, args)
        _make_raw(clip, raw)
        masker = PrivacyMasker(BENCH_MASKS, w, h)

        # --- the whole path on I420 at the configured size, against the encoder alone ---
        # Alternated ``--repeat`` times, the median kept: on a shared machine, load that comes
        # and goes then weighs on both sides alike.
        runs: list[tuple[float, float, float, PathRun]] = []  # encoder, whole path, wall, run
        for i in range(args.repeat):
            encoder_cpu = encoder_alone_cpu(raw, w, h, fps, cfg)
            delivery = delivery_cpu(raw)
            cpu0 = self_cpu_s()
            t0 = time.perf_counter()
            raw_run = record_clip(raw, tmp / f"raw-segments-{i}", w, h, fps, cfg, pool)
            raw_wall = time.perf_counter() - t0
            runs.append((encoder_cpu, self_cpu_s() - cpu0 - delivery, raw_wall, raw_run))
        ratios = sorted(whole / encoder for encoder, whole, _, _ in runs)
        encoder_cpu, raw_cpu, raw_wall, raw_run = sorted(runs, key=lambda r: r[1] / r[0])[
            len(runs) // 2
        ]

        # --- several cameras at once: CPU per camera against one camera, same run ---
        if counts != [1]:
            per_camera = {
                n: cameras_cpu(raw, tmp / "cameras", n, w, h, fps, cfg, delivery)
                for n in sorted({1, *counts})
            }
            scaling = {
                "cpu_per_camera_s": {str(n): round(c, 3) for n, c in per_camera.items()},
                "per_camera_growth_vs_1": {
                    str(n): round(c / per_camera[1], 3) for n, c in per_camera.items() if n > 1
                },
                "per_camera_growth_goal": f"<= {GOAL_PER_CAMERA_GROWTH}",
            }

        # --- the whole path on H.264 (decoding included), against the ffmpeg CLI ---
        cpu0 = self_cpu_s()
        t0 = time.perf_counter()
        signer = _signer()
        ours = record_clip(clip, tmp / "segments", w, h, fps, cfg, pool, signer)
        wall = time.perf_counter() - t0
        cpu = self_cpu_s() - cpu0
        if pool.stats().in_use:
            raise AssertionError("the recording path kept frames it should have released")

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
                *x264_cli_args(cfg, ours.gop),
                "-f", "hls", "-hls_time", f"{cfg.segment_seconds:g}",
                "-hls_segment_type", "fmp4", "-hls_playlist_type", "vod",
                "-hls_segment_filename", str(hls / "seg-%05d.m4s"),
                str(hls / "index.m3u8"),
            ]
        )  # fmt: skip
        ffmpeg_segments = len(list(hls.glob("seg-*.m4s")))

    frames = ours.frames
    return {
        "width": w,
        "height": h,
        "fps": fps,
        "clip_seconds": args.seconds,
        "frames": frames,
        "preset": cfg.preset,
        "mask_coverage": round(masker.coverage, 3),
        "encoder_cpu_s": round(encoder_cpu, 3),
        "camera_delivery_cpu_s": round(delivery, 3),
        "pipeline_i420_cpu_s": round(raw_cpu, 3),
        "pipeline_i420_fps": round(raw_run.frames / raw_wall, 2),
        "pipeline_i420_stage_wall_s": {k: round(v, 3) for k, v in raw_run.stage.items()},
        "pipeline_vs_encoder_cpu": round(raw_cpu / encoder_cpu, 3),
        "pipeline_vs_encoder_cpu_range": [round(ratios[0], 3), round(ratios[-1], 3)],
        "pipeline_vs_encoder_cpu_goal": f"<= {GOAL_VS_ENCODER}",
        "segments": ours.segments,
        "pipeline_cpu_s": round(cpu, 3),
        "pipeline_wall_s": round(wall, 3),
        "pipeline_fps": round(frames / wall, 2),
        "pipeline_stage_wall_s": {k: round(v, 3) for k, v in ours.stage.items()},
        "pipeline_h264_vs_encoder_cpu": round(cpu / encoder_cpu, 3),
        "media_signing_cpu_s": round(signer.cpu_s, 4),
        "media_signing_vs_pipeline_cpu": round(signer.cpu_s / cpu, 5),
        "media_signing_seis": signer.seis,
        "media_signing_vs_video_bytes": round(signer.sei_bytes / max(1, ours.media_bytes), 5),
        "ffmpeg_cpu_s": round(baseline.cpu_s, 3),
        "ffmpeg_wall_s": round(baseline.wall_s, 3),
        "ffmpeg_fps": round(frames / baseline.wall_s, 2),
        "ffmpeg_segments": ffmpeg_segments,
        "pipeline_vs_ffmpeg_cpu": round(cpu / baseline.cpu_s, 3),
        "pipeline_vs_ffmpeg_wall": round(wall / baseline.wall_s, 3),
        **scaling,
        "pool_peak_mib": round(pool.stats().peak_allocated / MIB, 1),
        "ffmpeg_cli": ffmpeg_version(),
    }

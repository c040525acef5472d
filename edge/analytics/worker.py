"""Entry point of the analytics process (one per camera), started by :class:`AnalyticsBridge`.

Thin on purpose: set up the process, build the engine, then loop — take the newest frame
slot, give the older ones back (too late for them), analyse, send events and stats to the
parent. When no frame comes for a while, tamper detection is told (signal lost).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import numpy as np

from edge.app.process import die_with_parent, setup_process
from edge.events import EventSigner
from edge.identity.unitkeys import keys_dir_of, load_signing_key

from ..config import AnalyticsConfig, CameraAnalyticsConfig
from .base import Detector
from .engine import AnalyticsEngine
from .shm import FrameRing

log = logging.getLogger(__name__)

STATS_PERIOD_S = 1.0


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything the child needs, picklable (the child is spawned, not forked)."""

    unit_id: str
    camera: str
    data_dir: Path
    cfg: AnalyticsConfig
    cam_cfg: CameraAnalyticsConfig
    ring_name: str
    slots: int
    width: int
    height: int
    log_level: str = "info"


def make_detector(cfg: AnalyticsConfig) -> Detector | None:
    if cfg.detector.model_path is None:
        return None
    from .litert import LiteRTDetector  # LiteRT is only imported where it is used

    return LiteRTDetector.from_config(cfg.detector)


def run(spec: WorkerSpec, ready: Any, free: Any, out: Any, stop: MpEvent) -> None:
    """Child process main. ``ready``/``free``/``out`` are multiprocessing queues."""
    parent = mp.parent_process()
    die_with_parent(parent.pid if parent is not None and parent.pid else os.getppid())
    setup_process(f"analytics-{spec.camera}"[:15], log_level=spec.log_level, nice=10)
    ring = FrameRing.attach(spec.ring_name, spec.slots, spec.width, spec.height)
    try:
        engine = AnalyticsEngine(
            camera=spec.camera,
            cfg=spec.cfg,
            cam_cfg=spec.cam_cfg,
            signer=EventSigner(load_signing_key(keys_dir_of(spec.data_dir)), spec.unit_id),
            detector=make_detector(spec.cfg),
        )
        out.put(
            ("started", {"detector": engine.detector.description if engine.detector else "motion"})
        )
        _loop(spec, engine, ring, ready, free, out, stop)
        for event in engine.flush():
            out.put(("event", event))
    except Exception as exc:  # report to the parent, which restarts us
        log.exception("[%s] analytics process failed", spec.camera)
        out.put(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        ring.close()


def _loop(
    spec: WorkerSpec,
    engine: AnalyticsEngine,
    ring: FrameRing,
    ready: Any,
    free: Any,
    out: Any,
    stop: MpEvent,
) -> None:
    late = 0
    analysed = 0
    window_start = time.monotonic()
    window_frames = 0
    fps = 0.0
    next_stats = time.monotonic() + STATS_PERIOD_S
    y = np.empty((spec.height, spec.width), dtype=np.uint8)
    u = np.empty((spec.height // 2, spec.width // 2), dtype=np.uint8)
    v = np.empty_like(u)
    while not stop.is_set():
        try:
            posted = [ready.get(timeout=0.25)]
        except queue.Empty:
            posted = []
        while True:
            try:
                posted.append(ready.get_nowait())
            except queue.Empty:
                break
        if posted:
            posted.sort(key=lambda m: m[1])
            for slot, _index in posted[:-1]:
                free.put(slot)  # too late for these: only the newest frame matters
            late += len(posted) - 1
            slot = posted[-1][0]
            sy, su, sv = ring.planes(slot)
            y[...], u[...], v[...] = sy, su, sv
            index, mono_ns, wall_ns = (int(x) for x in ring.meta[slot])
            free.put(slot)
            events = engine.process(y, u, v, index=index, mono_ns=mono_ns, wall_ns=wall_ns)
            analysed += 1
            window_frames += 1
        else:
            events = engine.tick()
        for event in events:
            out.put(("event", event))
        now = time.monotonic()
        if now >= next_stats:
            fps = window_frames / max(now - window_start, 1e-6)
            window_start, window_frames = now, 0
            next_stats = now + STATS_PERIOD_S
            out.put(("stats", _stats(engine, analysed, late, fps)))
    out.put(("stats", _stats(engine, analysed, late, fps)))


def _stats(engine: AnalyticsEngine, analysed: int, late: int, fps: float) -> dict[str, Any]:
    return {
        "analysed": analysed,
        "dropped_late": late,
        "fps": round(fps, 2),
        "inference_ms": round(engine.stats.inference_ms, 2),
        "process_ms": round(engine.stats.process_ms, 2),
        "detector_runs": engine.stats.detections_run,
        "tracks": engine.stats.tracks,
        "tamper": engine.stats.tamper,
        "learning": engine.tamper.learning if engine.tamper else False,
    }

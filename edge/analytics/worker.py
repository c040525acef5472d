"""Entry point of the analytics process (one per camera), started by :class:`AnalyticsBridge`.

Thin on purpose: set up the process, build the engine, then loop — take the newest frame
slot, give the older ones back (too late for them), analyse, send event drafts and stats to the
parent. When no frame comes for a while, tamper detection is told (signal lost).

This process runs models supplied from outside and holds no key: the unit's signing key is
neither in its arguments nor in its environment, and it never loads it. Before it reads the
model it confines itself (:mod:`edge.app.sandbox`): read-only access to the interpreter, its
libraries and the model, so neither the key file nor the configuration can be opened. What it
sends is plain JSON the parent checks (:mod:`edge.analytics.channel`); the parent signs.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from edge.app import sandbox
from edge.app.process import die_with_parent, setup_process

from ..config import AnalyticsConfig, CameraAnalyticsConfig
from . import channel
from .base import Detector
from .engine import AnalyticsEngine
from .shm import FrameRing

log = logging.getLogger(__name__)

STATS_PERIOD_S = 1.0


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything the child needs, picklable (the child is spawned, not forked). No key, and no
    path to one: the child has no use for the data directory."""

    camera: str
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


Entry = Callable[[WorkerSpec, FrameRing, Connection, Connection, Connection, Connection], None]


def readable_paths(spec: WorkerSpec) -> list[Path]:
    """All the analytics process may read once confined: the interpreter and its libraries, the
    dynamic loader's cache, CPU topology (for the inference runtime) and the model."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, "/usr", "/lib", "/lib64"}
    paths |= {"/etc/ld.so.cache", "/proc/cpuinfo", "/sys/devices/system/cpu"}
    # Never "" (the working directory) nor "/" (everything, the key included).
    paths |= {p for p in sys.path if p not in ("", "/") and os.path.isdir(p)}
    if spec.cfg.detector.model_path is not None:
        paths.add(str(spec.cfg.detector.model_path))
    return sorted(Path(p) for p in paths)


def child_main(
    entry: Entry,
    spec: WorkerSpec,
    ready: Connection,
    free: Connection,
    out: Connection,
    stop: Connection,
) -> None:
    """What the bridge starts: process set-up, the frame ring (opened while it still may),
    confinement, then ``entry`` (:func:`run`)."""
    parent = mp.parent_process()
    die_with_parent(parent.pid if parent is not None and parent.pid else os.getppid())
    setup_process(f"analytics-{spec.camera}"[:15], log_level=spec.log_level, nice=10)
    ring = FrameRing.attach(spec.ring_name, spec.slots, spec.width, spec.height)
    if sandbox.confine(readable_paths(spec)):
        log.info("[%s] analytics process confined: %s", spec.camera, sandbox.current())
    else:
        log.warning("[%s] analytics process %s", spec.camera, sandbox.current())
    entry(spec, ring, ready, free, out, stop)


def run(
    spec: WorkerSpec,
    ring: FrameRing,
    ready: Connection,
    free: Connection,
    out: Connection,
    stop: Connection,
) -> None:
    """Child process main. ``ready`` and ``stop`` are the read ends of the pipes from the
    parent, ``free`` and ``out`` the write ends of those back to it (see channel)."""
    out_fd, free_fd = out.fileno(), free.fileno()
    ready_fd, stop_fd = ready.fileno(), stop.fileno()
    try:
        engine = AnalyticsEngine(
            camera=spec.camera,
            cfg=spec.cfg,
            cam_cfg=spec.cam_cfg,
            detector=make_detector(spec.cfg),
        )
        detector = engine.detector.description if engine.detector else "motion"
        channel.send(out_fd, channel.Started(detector, sandbox.current()))
        _loop(spec, engine, ring, ready_fd, stop_fd, free_fd, out_fd)
        for event in engine.flush():
            channel.send(out_fd, event)
    except Exception as exc:  # report to the parent, which restarts us
        log.exception("[%s] analytics process failed", spec.camera)
        with contextlib.suppress(OSError):
            channel.send(out_fd, channel.Failed(f"{type(exc).__name__}: {exc}"))
    finally:
        ring.close()


def _loop(
    spec: WorkerSpec,
    engine: AnalyticsEngine,
    ring: FrameRing,
    ready_fd: int,
    stop_fd: int,
    free_fd: int,
    out_fd: int,
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
    while True:
        posted, stopped = channel.wait_posted(ready_fd, stop_fd, 0.25)
        if stopped:
            break
        posted = [slot for slot in posted if slot < spec.slots]
        if posted:
            posted.sort(key=lambda slot: int(ring.meta[slot][0]))  # by frame index
            for slot in posted[:-1]:
                channel.return_slot(free_fd, slot)  # too late: only the newest frame matters
            late += len(posted) - 1
            slot = posted[-1]
            sy, su, sv = ring.planes(slot)
            y[...], u[...], v[...] = sy, su, sv
            index, mono_ns, wall_ns = (int(x) for x in ring.meta[slot])
            channel.return_slot(free_fd, slot)
            events = engine.process(y, u, v, index=index, mono_ns=mono_ns, wall_ns=wall_ns)
            analysed += 1
            window_frames += 1
        else:
            events = engine.tick()
        for event in events:
            channel.send(out_fd, event)
        now = time.monotonic()
        if now >= next_stats:
            fps = window_frames / max(now - window_start, 1e-6)
            window_start, window_frames = now, 0
            next_stats = now + STATS_PERIOD_S
            channel.send(out_fd, _stats(engine, analysed, late, fps))
    channel.send(out_fd, _stats(engine, analysed, late, fps))


def _stats(engine: AnalyticsEngine, analysed: int, late: int, fps: float) -> channel.ChildStats:
    return channel.ChildStats(
        analysed=analysed,
        dropped_late=late,
        fps=round(fps, 2),
        inference_ms=round(engine.stats.inference_ms, 2),
        process_ms=round(engine.stats.process_ms, 2),
        detector_runs=engine.stats.detections_run,
        tracks=engine.stats.tracks,
        tamper=tuple(engine.stats.tamper),
        learning=engine.tamper.learning if engine.tamper else False,
    )

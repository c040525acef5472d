"""The analysis of one camera, frame by frame: motion → detector → tracker → rules → events,
with tamper detection beside them. Runs inside the analytics process, single-threaded.

The engine takes the downscaled, already *masked* I420 planes the capture thread put in shared
memory; it never sees anything else. It produces unsigned :class:`EventDraft` s: the process it
runs in holds no key, and edged signs what it accepts of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.events import EventDraft, jpeg_snapshot

from ..config import AnalyticsConfig, CameraAnalyticsConfig
from .base import Detection, Detector, Track
from .motion import MotionDetector, motion_blobs
from .rules import Alert, CountReport, RuleSet
from .tamper import TamperChange, TamperDetector
from .tracker import Tracker

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]


def i420_to_rgb(y: U8, u: U8, v: U8) -> U8:
    """BT.601 limited-range YUV 4:2:0 to RGB (nearest-neighbour chroma)."""
    h, w = y.shape
    yf = (y.astype(np.float32) - 16.0) * 1.164
    uf = np.repeat(np.repeat(u, 2, axis=0), 2, axis=1)[:h, :w].astype(np.float32) - 128.0
    vf = np.repeat(np.repeat(v, 2, axis=0), 2, axis=1)[:h, :w].astype(np.float32) - 128.0
    rgb = np.empty((h, w, 3), dtype=np.float32)
    rgb[..., 0] = yf + 1.596 * vf
    rgb[..., 1] = yf - 0.392 * uf - 0.813 * vf
    rgb[..., 2] = yf + 2.017 * uf
    return np.asarray(np.clip(rgb, 0, 255), dtype=np.uint8)


@dataclass(slots=True)
class EngineStats:
    frames: int = 0
    detections_run: int = 0
    inference_ms: float = 0.0
    """Mean of the last detector runs (exponential average)."""
    process_ms: float = 0.0
    """Mean time to analyse one frame, detector included."""
    tracks: int = 0
    events: int = 0
    tamper: list[str] = field(default_factory=list)


def _ms(wall_ns: int) -> int:
    """``wall_ns`` rounded to the nearest millisecond."""
    return (wall_ns + 500_000) // 1_000_000 * 1_000_000


class AnalyticsEngine:
    """One camera's analysis state; not thread-safe (the analytics process owns it)."""

    def __init__(
        self,
        *,
        camera: str,
        cfg: AnalyticsConfig,
        cam_cfg: CameraAnalyticsConfig,
        detector: Detector | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.camera = camera
        self.cfg = cfg
        self.cam_cfg = cam_cfg
        self.detector = detector
        self.motion = MotionDetector(threshold=cfg.motion_threshold)
        self.tracker = Tracker(high_score=max(cfg.detector.score_threshold, 0.3))
        self.rules = RuleSet(cam_cfg, cfg.timezone)
        self.tamper = TamperDetector(cam_cfg.tamper) if cam_cfg.tamper.enabled else None
        self.stats = EngineStats()
        self._clock = clock
        # wall_ns - mono_ns of the first frame, kept: one clock for every time this engine
        # stamps. Each frame's own pair of stamps jitters by milliseconds; following it moved
        # count interval bounds back and forth (intervals closing again with start = end).
        self._wall_offset_ns: int | None = None
        self._last_t: float | None = None
        self._last_index = -1
        self._last_detect_t = -1e9

    def _wall(self, t: float) -> int:
        """Wall-clock ns of monotonic time ``t``, through the first frame's pair of stamps."""
        if self._wall_offset_ns is None:
            return time.time_ns()
        return round(t * 1e9) + self._wall_offset_ns

    def process(
        self, y: U8, u: U8, v: U8, *, index: int, mono_ns: int, wall_ns: int
    ) -> list[EventDraft]:
        """Analyse one frame; returns the events it caused."""
        started = time.perf_counter()
        t = mono_ns / 1e9
        if self._wall_offset_ns is None:
            self._wall_offset_ns = wall_ns - mono_ns
        self._last_t = t
        self._last_index = index
        events: list[EventDraft] = []
        rgb: U8 | None = None
        motion = self.motion.update(y)
        if self.tamper is not None:
            changes = self.tamper.update(y, t, moving=motion.moving)
            events += self._tamper_events(changes, index, lambda: i420_to_rgb(y, u, v))
        tracks_alive = bool(self.tracker.tracks)
        detections: list[Detection] = []
        if self.detector is None:
            detections = motion_blobs(motion.mask) if motion.moving else []
        elif (
            not self.cfg.detector.motion_gated
            or motion.moving
            or tracks_alive
            or t - self._last_detect_t >= 2.0  # a slow look now and then: parked cars
        ):
            rgb = i420_to_rgb(y, u, v)
            t0 = time.perf_counter()
            detections = self.detector.detect(rgb)
            ms = (time.perf_counter() - t0) * 1e3
            self.stats.detections_run += 1
            self.stats.inference_ms = (
                ms if self.stats.detections_run == 1 else 0.8 * self.stats.inference_ms + 0.2 * ms
            )
            self._last_detect_t = t
        tracks = self.tracker.update(detections, t)
        alerts, reports = self.rules.update(tracks, t, self._wall_offset_ns / 1e9, (y, u, v))
        for alert in alerts:
            if rgb is None and self.cfg.snapshots:
                rgb = i420_to_rgb(y, u, v)
            events.append(self._alert_event(alert, index, tracks, rgb))
        events += self._count_events(reports, index)
        self.stats.frames += 1
        self.stats.tracks = len([tr for tr in tracks if tr.confirmed])
        self.stats.events += len(events)
        self.stats.tamper = sorted(self.tamper.active) if self.tamper else []
        ms = (time.perf_counter() - started) * 1e3
        self.stats.process_ms = (
            ms if self.stats.frames == 1 else 0.9 * self.stats.process_ms + 0.1 * ms
        )
        return events

    def tick(self) -> list[EventDraft]:
        """No frame arrived for a while: lets tamper detection notice a lost signal."""
        if self.tamper is None:
            return []
        t = self._clock()
        return self._tamper_events(self.tamper.tick(t), self._last_index, lambda: None)

    def flush(self) -> list[EventDraft]:
        """Close the counting intervals (shutdown)."""
        t = self._clock()
        if self._last_t is not None:
            t = max(t, self._last_t)  # never close an interval before its last frame
        return self._count_events(self.rules.flush(t), self._last_index)

    def _tamper_events(
        self, changes: list[TamperChange], index: int, rgb: Callable[[], U8 | None]
    ) -> list[EventDraft]:
        out = []
        for c in changes:
            image = rgb() if c.raised and self.cfg.snapshots else None
            out.append(
                EventDraft(
                    category="tamper",
                    kind=c.cause,
                    rule="tamper",
                    state="raised" if c.raised else "cleared",
                    wall_ns=self._wall(c.t),
                    frame_index=index,
                    details=dict(c.measures),
                    snapshot=jpeg_snapshot(image) if image is not None else None,
                )
            )
            log.warning(
                "[%s] tamper %s %s", self.camera, c.cause, "raised" if c.raised else "cleared"
            )
        return out

    def _alert_event(
        self, alert: Alert, index: int, tracks: list[Track], rgb: U8 | None
    ) -> EventDraft:
        log.info("[%s] %s alert from %s", self.camera, alert.kind, alert.rule)
        return EventDraft(
            category="alert",
            kind=alert.kind,
            rule=alert.rule,
            wall_ns=self._wall(alert.t),
            frame_index=index,
            details=dict(alert.details),
            snapshot=jpeg_snapshot(rgb) if rgb is not None and self.cfg.snapshots else None,
        )

    def _count_events(self, reports: list[CountReport], index: int) -> list[EventDraft]:
        # edged refuses an interval that is empty on the wall clock (and restarts the child):
        # one shorter than a millisecond once rounded is not worth that.
        drafts = [self._count_event(r, index) for r in reports]
        return [d for d in drafts if (d.interval_start_ns or 0) < d.wall_ns]

    def _count_event(self, report: CountReport, index: int) -> EventDraft:
        # Bounds to the millisecond (FIWARE's resolution): float seconds near 1.8e9 carry
        # ~0.2 µs of error, which put a boundary at 14:12:59.999 instead of 14:13:00.000.
        start, end = (_ms(self._wall(x)) for x in (report.start, report.end))
        counts = {f"{label}/{way}": n for (label, way), n in sorted(report.counts.items())}
        return EventDraft(
            category="count",
            kind="line_crossing",
            rule=report.rule,
            wall_ns=end,
            frame_index=index,
            details={"counts": counts, "interval_seconds": round(report.end - report.start, 3)},
            interval_start_ns=start,
        )

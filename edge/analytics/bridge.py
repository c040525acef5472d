"""The recording side's handle on the analytics process of one camera.

:meth:`AnalyticsBridge.offer` is called in the capture thread right after masking, for every
frame. It must never slow recording: it skips frames above ``rate_fps``, and otherwise copies a
decimated frame into a free shared-memory slot or, when the analytics process still holds them
all, drops the frame and counts it. It never waits for the child.

Threads and processes:

- the capture thread calls :meth:`offer` (only it);
- the bridge's *drain* thread receives events and statistics from the child, calls the event
  listeners (in that thread: a listener must hand work off quickly, e.g. to a queue), and
  restarts the child with back-off when it dies;
- any thread may call :meth:`stats`, :meth:`add_listener`, :meth:`stop`.

Lifetime: the child dies with edged, even when edged is SIGKILLed (it asks the kernel for
that and watches its parent, :func:`edge.app.process.die_with_parent`); with it goes
multiprocessing's resource tracker, which then unlinks the shared memory and semaphores.
A child is only ever started from a thread that outlives it (the caller of :meth:`start`,
then the drain thread), since the kernel's parent-death signal follows the starting thread.

``_slots_lock`` protects the free-slot list and the queues, which the drain thread replaces when
it restarts the child; :meth:`offer` only *tries* the lock and drops the frame if a restart
holds it. ``_stats_lock`` protects the statistics the drain thread writes and :meth:`stats`
reads; counters of :meth:`offer` are written by the capture thread only.
"""

from __future__ import annotations

import collections
import enum
import logging
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.events import SignedEvent
from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key

from ..backoff import Backoff
from ..config import CameraConfig, EdgeConfig
from ..frames import Frame
from . import worker
from .shm import FrameRing, analysis_geometry, remove_stale_rings

log = logging.getLogger(__name__)

EventListener = Callable[[SignedEvent], object]

RECENT_ALERTS = 20
BACKOFF_MAX_S = 30.0


class ChildState(enum.Enum):
    """Life of the analytics process, as the bridge sees it."""

    IDLE = "idle"
    STARTING = "starting"  # spawned, loading its model
    RUNNING = "running"  # said it is ready
    BACKOFF = "backoff"  # died; waiting before the next start
    STOPPING = "stopping"
    STOPPED = "stopped"


class AnalyticsBridge:
    """Starts, feeds and supervises the analytics process of one camera."""

    def __init__(
        self,
        cfg: EdgeConfig,
        cam: CameraConfig,
        *,
        listeners: list[EventListener] | None = None,
        mqtt: bool = True,
    ) -> None:
        self.cfg = cfg
        self.cam = cam
        self.acfg = cfg.analytics
        self.step, self.width, self.height = analysis_geometry(
            cam.width, cam.height, self.acfg.width
        )
        self._listeners: list[EventListener] = list(listeners or [])
        self._ctx = mp.get_context("spawn")
        self._ring: FrameRing | None = None
        self._proc: Any = None
        self._stop_event = self._ctx.Event()
        self._stopping = threading.Event()
        self._drain_thread: threading.Thread | None = None
        self._slots_lock = threading.Lock()
        self._free: list[int] = []
        self._ready_q: Any = None
        self._free_q: Any = None
        self._out_q: Any = None
        self._period_ns = round(1e9 / self.acfg.rate_fps)
        self._last_due_ns: int | None = None
        # Written by the capture thread only.
        self.offered = 0
        self.accepted = 0
        self.skipped_rate = 0
        self.dropped_busy = 0
        self.dropped_size = 0
        self._stats_lock = threading.Lock()
        self._child: dict[str, Any] = {}
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_ALERTS)
        self._restarts = 0
        self._last_failure: str | None = None
        self._detector = "starting"
        self.state = ChildState.IDLE
        self._publisher: Any = None
        if mqtt and self.acfg.mqtt.enabled:
            from edge.analytics.mqtt_publisher import MqttPublisher

            self._publisher = MqttPublisher.from_config(cfg)
            self._listeners.append(self._publisher.publish)

    # --- life cycle --------------------------------------------------------------------------

    def _set_state(self, state: ChildState, reason: str) -> None:
        with self._stats_lock:
            old, self.state = self.state, state
        if old is not state:
            log.info("[%s] analytics %s -> %s: %s", self.cam.id, old.value, state.value, reason)

    def add_listener(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        """Create the shared memory and start the child (returns at once; the child loads its
        model in the background and frames offered meanwhile wait in their slots or drop)."""
        # The parent creates the key if needed, so two processes never race to create it.
        load_or_create_signing_key(keys_dir_of(self.cfg.unit.data_dir))
        remove_stale_rings()
        self._ring = FrameRing.create(self.acfg.slots, self.width, self.height)
        if self._publisher is not None:
            self._publisher.start()
        self._spawn()
        self._drain_thread = threading.Thread(
            target=self._drain, name=f"analytics-{self.cam.id}", daemon=True
        )
        self._drain_thread.start()
        log.info(
            "[%s] analytics started: %dx%d (1/%d) at %g fps, %d slots",
            self.cam.id,
            self.width,
            self.height,
            self.step,
            self.acfg.rate_fps,
            self.acfg.slots,
        )

    def _spawn(self) -> None:
        assert self._ring is not None
        with self._slots_lock:
            self._ready_q = self._ctx.Queue()
            self._free_q = self._ctx.Queue()
            self._out_q = self._ctx.Queue()
            self._free = list(range(self.acfg.slots))
        spec = worker.WorkerSpec(
            unit_id=self.cfg.unit.id,
            camera=self.cam.id,
            data_dir=self.cfg.unit.data_dir,
            cfg=self.acfg,
            cam_cfg=self.acfg.for_camera(self.cam.id),
            ring_name=self._ring.name,
            slots=self.acfg.slots,
            width=self.width,
            height=self.height,
            log_level=self.cfg.logging.level.value,
        )
        self._proc = self._ctx.Process(
            target=worker.run,
            args=(spec, self._ready_q, self._free_q, self._out_q, self._stop_event),
            name=f"analytics-{self.cam.id}",
            daemon=True,
        )
        self._proc.start()
        self._set_state(ChildState.STARTING, f"pid {self._proc.pid}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child (it flushes its counting intervals first) and release everything."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._stop_event.set()
        self._set_state(ChildState.STOPPING, "stop requested")
        if self._proc is not None:
            self._proc.join(timeout)
            if self._proc.is_alive():
                log.warning("[%s] analytics process did not stop; killing it", self.cam.id)
                self._proc.kill()
                self._proc.join(2.0)
        if self._drain_thread is not None:
            self._drain_thread.join(timeout)
        if self._publisher is not None:
            self._publisher.stop()
        for q in (self._ready_q, self._free_q, self._out_q):
            if q is not None:
                q.cancel_join_thread()
                q.close()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._set_state(ChildState.STOPPED, "stopped")

    # --- capture thread ----------------------------------------------------------------------

    def offer(self, frame: Frame) -> bool:
        """Hand a *masked* frame to analytics if it is due and a slot is free; never blocks.

        Returns True when the frame was taken. Frames above the analytics rate are skipped
        (not a drop); a frame that is due but finds no free slot is dropped and counted.
        """
        self.offered += 1
        ring = self._ring
        if ring is None or self._stopping.is_set():
            return False
        last = self._last_due_ns
        # Tolerate 10 % jitter so 25 fps offered at 5 fps gives every 5th frame, not every 6th.
        if last is not None and frame.mono_ns - last < self._period_ns * 0.9:
            self.skipped_rate += 1
            return False
        # The frame is due: whether it is taken or dropped, the next one is due a period later
        # (so drops count lost analytics frames, not every camera frame while busy).
        self._last_due_ns = frame.mono_ns
        if frame.width != self.cam.width or frame.height != self.cam.height:
            self.dropped_size += 1
            return False
        if not self._slots_lock.acquire(blocking=False):
            self.dropped_busy += 1  # the child is being restarted
            return False
        try:
            while True:
                try:
                    self._free.append(self._free_q.get_nowait())
                except queue.Empty:
                    break
            if not self._free:
                self.dropped_busy += 1
                return False
            slot = self._free.pop()
            ring.write_decimated(
                slot,
                frame.y,
                frame.u,
                frame.v,
                self.step,
                index=frame.index,
                mono_ns=frame.mono_ns,
                wall_ns=frame.wall_ns,
            )
            self._ready_q.put_nowait((slot, frame.index))
        finally:
            self._slots_lock.release()
        self.accepted += 1
        return True

    def in_flight(self) -> int:
        """Slots the analytics process holds now (0 = idle). Call from the capture thread."""
        with self._slots_lock:
            while True:
                try:
                    self._free.append(self._free_q.get_nowait())
                except queue.Empty:
                    break
            return self.acfg.slots - len(self._free)

    # --- drain thread ------------------------------------------------------------------------

    def _drain(self) -> None:
        # Restarts double from 1 s up to BACKOFF_MAX_S, without jitter (one child per camera,
        # nothing to spread); only this thread uses it.
        backoff = Backoff(1.0, BACKOFF_MAX_S, jitter=0.0)
        started_at = time.monotonic()
        while True:
            try:
                kind, payload = self._out_q.get(timeout=0.25)
            except queue.Empty:
                kind, payload = None, None
            except (EOFError, OSError):
                kind, payload = None, None
            if kind is not None:
                self._handle(kind, payload)
                continue
            if self._stopping.is_set():
                if self._proc is None or not self._proc.is_alive():
                    self._drain_rest()
                    return
                continue
            if self._proc is not None and not self._proc.is_alive():
                self._drain_rest()
                if time.monotonic() - started_at > 60:
                    backoff.reset()  # it ran for a while: start again with a short delay
                delay = backoff.next_delay()
                log.error(
                    "[%s] analytics process exited (code %s); restarting in %.0f s",
                    self.cam.id,
                    self._proc.exitcode,
                    delay,
                )
                self._set_state(ChildState.BACKOFF, f"exit code {self._proc.exitcode}")
                if self._stopping.wait(delay):
                    return
                with self._stats_lock:
                    self._restarts += 1
                self._spawn()
                started_at = time.monotonic()

    def _drain_rest(self) -> None:
        while True:
            try:
                kind, payload = self._out_q.get(timeout=0.05)
            except (queue.Empty, EOFError, OSError):
                return
            self._handle(kind, payload)

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "event":
            event: SignedEvent = payload
            if event.body["category"] != "count":
                with self._stats_lock:
                    self._recent.append(
                        {
                            k: event.body.get(k)
                            for k in ("time", "category", "kind", "rule", "state", "details")
                        }
                    )
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:  # one failing consumer must not starve the others
                    log.exception("[%s] event listener failed", self.cam.id)
        elif kind == "stats":
            with self._stats_lock:
                self._child = dict(payload)
        elif kind == "started":
            with self._stats_lock:
                self._detector = payload["detector"]
            self._set_state(ChildState.RUNNING, f"detector {payload['detector']}")
        elif kind == "failed":
            with self._stats_lock:
                self._last_failure = str(payload)

    # --- diagnostics -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Health for diagnostics (never a picture)."""
        with self._stats_lock:
            child = dict(self._child)
            recent = list(self._recent)
            restarts, failure, detector = self._restarts, self._last_failure, self._detector
        proc = self._proc
        return {
            "camera": self.cam.id,
            "state": self.state.value,
            "running": bool(proc is not None and proc.is_alive()),
            "pid": proc.pid if proc is not None else None,
            "detector": detector,
            "resolution": f"{self.width}x{self.height}",
            "rate_fps": self.acfg.rate_fps,
            "offered": self.offered,
            "accepted": self.accepted,
            "skipped_rate": self.skipped_rate,
            "dropped_busy": self.dropped_busy,
            "dropped_size": self.dropped_size,
            "analysed": child.get("analysed", 0),
            "dropped_late": child.get("dropped_late", 0),
            "fps": child.get("fps", 0.0),
            "inference_ms": child.get("inference_ms", 0.0),
            "process_ms": child.get("process_ms", 0.0),
            "tracks": child.get("tracks", 0),
            "tamper": child.get("tamper", []),
            "restarts": restarts,
            "last_failure": failure,
            "recent_alerts": recent,
        }

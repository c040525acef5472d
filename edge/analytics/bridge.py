"""The recording side's handle on the analytics process of one camera.

:meth:`AnalyticsBridge.offer` is called in the capture thread right after masking, for every
frame. It must never slow recording: it skips frames above ``rate_fps``, and otherwise copies a
decimated frame into a free shared-memory slot or, when the analytics process still holds them
all, drops the frame and counts it. It never waits for the child.

Threads and processes:

- the capture thread calls :meth:`offer` (only it);
- the bridge's *drain* thread receives event drafts and statistics from the child, checks them
  (:mod:`edge.analytics.channel`), signs the accepted drafts with the unit key, calls the event
  listeners (in that thread: a listener must hand work off quickly, e.g. to a queue), and
  restarts the child with back-off when it dies, or replaces it when it breaks the protocol;
- any thread may call :meth:`stats`, :meth:`add_listener`, :meth:`stop`.

Trust: the child runs models from outside and is treated as compromisable. It gets no key (only
this side signs), and nothing it sends is unpickled: drafts, statistics and returned slots come
as plain bytes that are checked before use.

Lifetime: the child dies with edged, even when edged is SIGKILLed (it asks the kernel for
that and watches its parent, :func:`edge.app.process.die_with_parent`); with it goes
multiprocessing's resource tracker, which then unlinks the shared memory and semaphores.
A child is only ever started from a thread that outlives it (the caller of :meth:`start`,
then the drain thread), since the kernel's parent-death signal follows the starting thread.

``_slots_lock`` protects the free-slot list and the ready, stop and free-slot pipes, which the
drain thread replaces when it restarts the child; :meth:`offer` only *tries* the lock and
drops the frame if a restart holds it. The message pipe and its reader belong to the drain
thread. ``_stats_lock`` protects the statistics the drain thread writes and :meth:`stats`
reads; counters of :meth:`offer` are written by the capture thread only.
"""

from __future__ import annotations

import collections
import enum
import logging
import multiprocessing as mp
import os
import select
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from edge.events import EventDraft, EventSigner, SignedEvent
from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key

from ..backoff import Backoff
from ..config import CameraConfig, EdgeConfig
from ..errors import ProtocolError
from ..framepool import FramePool
from ..frames import Frame
from . import channel, decree, worker
from .fiware import count_entities
from .shm import FrameRing, analysis_geometry, remove_stale_rings

log = logging.getLogger(__name__)

EventListener = Callable[[SignedEvent], object]

RECENT_ALERTS = 20
BACKOFF_MAX_S = 30.0


def seal_draft(
    signer: EventSigner,
    camera: str,
    draft: EventDraft,
    provenance: dict[str, str] | None = None,
) -> SignedEvent:
    """Sign a checked draft of ``camera``'s analytics process; count events get their FIWARE
    entities here, from the counts, so that the child has no say in the unit or camera named;
    every event (counts, alerts, tamper) gets ``provenance`` (model digest, configuration
    version), signed with the rest."""
    extra: dict[str, Any] = {}
    if provenance is not None:
        extra["provenance"] = dict(provenance)
    if draft.category == "count" and draft.interval_start_ns is not None:
        extra["fiware"] = count_entities(
            unit=signer.unit_id,
            camera=camera,
            line=draft.rule,
            start_wall_ns=draft.interval_start_ns,
            end_wall_ns=draft.wall_ns,
            counts=channel.parse_counts(draft.details),
        )
    return signer.seal(draft, camera=camera, extra=extra or None)


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
        pool: FramePool | None = None,
    ) -> None:
        self.cfg = cfg
        #: The unit's frame memory budget: the shared memory is reserved against it.
        self._pool = pool
        self._reserved = 0
        self.cam = cam
        self.acfg = cfg.analytics
        self.step, self.width, self.height = analysis_geometry(
            cam.width, cam.height, self.acfg.width
        )
        self._listeners: list[EventListener] = list(listeners or [])
        self._ctx = mp.get_context("spawn")
        self._ring: FrameRing | None = None
        self._proc: Any = None
        self._stopping = threading.Event()
        self._drain_thread: threading.Thread | None = None
        self._slots_lock = threading.Lock()
        self._free: list[int] = []
        self._ready_w: Connection | None = None  # slots posted to the child (non-blocking)
        self._stop_w: Connection | None = None  # closed to tell the child to stop
        self._free_r: Connection | None = None  # slots handed back (non-blocking)
        self._out_r: Connection | None = None  # framed messages (non-blocking)
        self._reader: channel.MessageReader | None = None
        self._signer: EventSigner | None = None
        self._labels = decree.declared_labels(cfg)
        self._provenance: dict[str, str] | None = None
        self._period_ns = round(1e9 / self.acfg.rate_fps)
        self._last_due_ns: int | None = None
        # Written by the capture thread only.
        self.offered = 0
        self.accepted = 0
        self.skipped_rate = 0
        self.dropped_busy = 0
        self.dropped_size = 0
        self._stats_lock = threading.Lock()
        self._child = channel.ChildStats()
        self._rejected = 0
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_ALERTS)
        self._restarts = 0
        self._last_failure: str | None = None
        self._detector = "starting"
        self._sandbox = "starting"
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
        # Only this process holds the key: the child sends drafts, we sign them.
        self._signer = EventSigner(
            load_or_create_signing_key(keys_dir_of(self.cfg.unit.data_dir)), self.cfg.unit.id
        )
        # Computed here, by edged, from the configuration it applies: not the child's say.
        self._provenance = decree.provenance(self.cfg, self.cam.id)
        remove_stale_rings()
        if self._pool is not None:
            nbytes = FrameRing.size_of(self.acfg.slots, self.width, self.height)
            self._pool.reserve(nbytes, f"camera {self.cam.id}'s analytics shared memory")
            self._reserved = nbytes
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
        ready_r, ready_w = self._ctx.Pipe(duplex=False)
        stop_r, stop_w = self._ctx.Pipe(duplex=False)
        free_r, free_w = self._ctx.Pipe(duplex=False)
        out_r, out_w = self._ctx.Pipe(duplex=False)
        for ours in (ready_w, free_r, out_r):
            os.set_blocking(ours.fileno(), False)
        with self._slots_lock:
            old = (self._ready_w, self._stop_w, self._free_r, self._out_r)
            self._ready_w, self._stop_w = ready_w, stop_w
            self._free_r, self._out_r = free_r, out_r
            self._reader = channel.MessageReader(out_r.fileno())
            self._free = list(range(self.acfg.slots))
        for previous in old:  # the last child's, if any
            if previous is not None:
                previous.close()
        spec = worker.WorkerSpec(
            camera=self.cam.id,
            cfg=self.acfg,
            cam_cfg=self.acfg.for_camera(self.cam.id),
            ring_name=self._ring.name,
            slots=self.acfg.slots,
            width=self.width,
            height=self.height,
            log_level=self.cfg.logging.level.value,
        )
        proc = self._ctx.Process(
            target=worker.child_main,
            args=(worker.run, spec, ready_r, free_w, out_w, stop_r),
            name=f"analytics-{self.cam.id}",
            daemon=True,
        )
        proc.start()
        self._proc = proc  # only once started: stop() may join it from another thread
        # The child has its copies; ours would keep the pipes open after it dies (no EOF).
        for child_end in (ready_r, stop_r, free_w, out_w):
            child_end.close()
        if self._stopping.is_set():  # stop() came while this child was being started
            self._tell_child_to_stop()
        self._set_state(ChildState.STARTING, f"pid {proc.pid}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child (it flushes its counting intervals first) and release everything."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._tell_child_to_stop()
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
        with self._slots_lock:  # offer() may be using the pipes
            for conn in (self._ready_w, self._free_r, self._out_r):
                if conn is not None:
                    conn.close()
            self._ready_w = self._free_r = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._pool is not None and self._reserved:
            self._pool.unreserve(self._reserved)
            self._reserved = 0
        self._set_state(ChildState.STOPPED, "stopped")

    def _tell_child_to_stop(self) -> None:
        """End of file on its stop pipe: the child flushes and exits (nothing it can block)."""
        with self._slots_lock:
            stop_w, self._stop_w = self._stop_w, None
        if stop_w is not None:
            stop_w.close()

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
            self._collect_free()
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
            if self._ready_w is None or not channel.post_slot(self._ready_w.fileno(), slot):
                self._free.append(slot)  # the child reads nothing any more
                self.dropped_busy += 1
                return False
        finally:
            self._slots_lock.release()
        self.accepted += 1
        return True

    def in_flight(self) -> int:
        """Slots the analytics process holds now (0 = idle). Call from the capture thread."""
        with self._slots_lock:
            self._collect_free()
            return self.acfg.slots - len(self._free)

    def _collect_free(self) -> None:
        """Slots the child handed back (``_slots_lock`` held). A slot not in the free list is
        ours to take back; repeats or inventions of a misbehaving child change nothing."""
        if self._free_r is None:
            return
        for slot in channel.read_returned_slots(self._free_r.fileno(), self.acfg.slots):
            if slot not in self._free:
                self._free.append(slot)

    # --- drain thread ------------------------------------------------------------------------

    def _drain(self) -> None:
        # Restarts double from 1 s up to BACKOFF_MAX_S, without jitter (one child per camera,
        # nothing to spread); only this thread uses it.
        backoff = Backoff(1.0, BACKOFF_MAX_S, jitter=0.0)
        started_at = time.monotonic()
        while True:
            if self._receive(0.25):
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

    def _receive(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for messages and handle the whole ones; True if any came."""
        reader = self._reader
        if reader is None or reader.eof:
            # Nothing more will come from this child; the caller notices when it is gone.
            time.sleep(0.05 if self._stopping.is_set() else timeout)
            return False
        handled = False
        try:
            ready, _, _ = select.select([reader.fd], [], [], timeout)
            if not ready:
                return False
            for payload in reader.read():
                self._handle(channel.decode(payload, labels=self._labels))  # up to a bad one
                handled = True
            if reader.error is not None:
                raise reader.error
        except ProtocolError as exc:
            self._reject(exc)
        except (OSError, ValueError):  # the pipe was closed under us (stop() timed out on us)
            reader.eof = True
        return handled

    def _reject(self, exc: ProtocolError) -> None:
        """The child broke the channel's rules: nothing more it sends is used, it is replaced."""
        self._reader = None
        with self._stats_lock:
            self._rejected += 1
            self._last_failure = f"protocol: {exc}"
        log.error("[%s] analytics process sent a bad message (%s); replacing it", self.cam.id, exc)
        if self._proc is not None:
            self._proc.kill()

    def _drain_rest(self) -> None:
        """What a child that exited had sent before it died."""
        deadline = time.monotonic() + 1.0
        while self._reader is not None and not self._reader.eof and time.monotonic() < deadline:
            self._receive(0.05)

    def _handle(self, message: channel.ChildMessage) -> None:
        if isinstance(message, EventDraft):
            assert self._signer is not None  # set in start(), before the child exists
            event = seal_draft(self._signer, self.cam.id, message, self._provenance)
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
        elif isinstance(message, channel.ChildStats):
            with self._stats_lock:
                self._child = message
        elif isinstance(message, channel.Started):
            with self._stats_lock:
                self._detector, self._sandbox = message.detector, message.sandbox
            self._set_state(ChildState.RUNNING, f"detector {message.detector}, {message.sandbox}")
        else:
            with self._stats_lock:
                self._last_failure = message.reason

    # --- diagnostics -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Health for diagnostics (never a picture)."""
        with self._stats_lock:
            child = self._child
            recent = list(self._recent)
            restarts, failure, detector = self._restarts, self._last_failure, self._detector
            rejected, confinement = self._rejected, self._sandbox
        proc = self._proc
        return {
            "camera": self.cam.id,
            "state": self.state.value,
            "running": bool(proc is not None and proc.is_alive()),
            "pid": proc.pid if proc is not None else None,
            "detector": detector,
            "mode": "detector" if self.acfg.detector.model_path is not None else "motion-only",
            "resolution": f"{self.width}x{self.height}",
            "rate_fps": self.acfg.rate_fps,
            "offered": self.offered,
            "accepted": self.accepted,
            "skipped_rate": self.skipped_rate,
            "dropped_busy": self.dropped_busy,
            "dropped_size": self.dropped_size,
            "analysed": child.analysed,
            "dropped_late": child.dropped_late,
            "fps": child.fps,
            "inference_ms": child.inference_ms,
            "process_ms": child.process_ms,
            "tracks": child.tracks,
            "tamper": list(child.tamper),
            "restarts": restarts,
            "rejected_messages": rejected,
            "sandbox": confinement,
            "last_failure": failure,
            "recent_alerts": recent,
        }

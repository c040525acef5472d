"""The recording path of one camera: capture → privacy mask (in place, first) → encode → sink.

Threads and what they touch:

- the **capture thread** (owned by :class:`edge.capture.loop.CaptureLoop`) calls
  :meth:`CameraPipeline._on_frame` for every frame. It masks the frame in place *before anything
  else sees it*, offers the masked frame to the frame observers (analytics; they must not block),
  then puts it on the bounded recording queue. A full queue means the recording thread is late:
  the frame is dropped and counted, so capture never waits for recording.
- the **recording thread** takes frames off the queue, encodes them and writes finished segments
  to the sink. It never waits for analytics or the network; a sink error is logged and counted,
  and recording goes on with the next segment. If it ends without being asked to (an encoder
  that keeps failing, any unexpected exception), :attr:`CameraPipeline.recorder_failure` says
  why: the daemon raises an alarm and exits non-zero so that systemd restarts it, since
  capture alone only drops frames.
- any thread may call :meth:`snapshot` (diagnostics), :meth:`set_masks` (SIGHUP reload) and
  :meth:`preview_frame` (a copy of the latest masked frame, taken under ``_preview_lock``).

Memory: every frame comes from the unit's :class:`~edge.framepool.FramePool`. The capture
thread holds a frame's first reference; the recording queue takes it over (or the frame is
released when the queue is full), the preview slot holds a second one until the next frame
replaces it, and the recording thread releases the frame once the encoder has copied it. A
frame the pool has no buffer for is never allocated: the source skips it and it is counted as
a drop, like a full queue. The queue holds ``queue_seconds`` of frames, or fewer when they do
not fit in the camera's share of the budget (:func:`edge.framepool.queue_frames`).

``self._masking`` (the masker and the commitment it stands for: mask-set digest, configuration
version) is replaced whole on reload; reading an attribute is atomic in CPython, so the capture
thread uses either the old or the new masker for a given frame, never a mix, and queues the
frame with the commitment of the masker that masked it. The recording thread's
:class:`~edge.privacy.commitment.MaskTracker` turns those into each segment's signed mask
commitment.
Counters are only written by the one thread named next to them; readers may see a value one
frame old, which diagnostics accept.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from edge.capture import open_source
from edge.capture.loop import CaptureLoop
from edge.config import CameraConfig, PrivacyMaskConfig
from edge.errors import EdgeError
from edge.framepool import DEFAULT_BUDGET_MIB, FramePool, queue_frames
from edge.frames import Frame, i420_size
from edge.privacy.commitment import Committed, MaskSet, MaskTracker
from edge.privacy.faceblur import FaceBlurrer
from edge.privacy.masker import PrivacyMasker
from edge.snapshot import CameraStatus
from edge.video.base import MediaSegment, SegmentSink
from edge.video.encoder import TIME_GAP_S, SegmentEncoder
from edge.video.mediasigning import MediaSigner, SigningIdentity

log = logging.getLogger(__name__)

#: Called in the capture thread with each *masked* frame; must return quickly and never block.
FrameObserver = Callable[[Frame], object]

_STOP = object()


class CameraPipeline:
    """Capture, mask, encode and record one camera until :meth:`stop`."""

    def __init__(
        self,
        cam: CameraConfig,
        sink: SegmentSink,
        *,
        observers: Sequence[FrameObserver] = (),
        face_blur: FaceBlurrer | None = None,
        queue_seconds: float = 2.0,
        config_version: bytes = bytes(32),
        media_signing: SigningIdentity | None = None,
        pool: FramePool | None = None,
        budget_share: float = 1.0,
    ) -> None:
        """``pool`` is the unit's (a pool of the default budget when None); ``budget_share``
        the part of its budget this camera's queue may plan for (1 / the number of cameras)."""
        self.cam = cam
        self._media_signing = media_signing
        self._sink = sink
        self._observers = list(observers)
        self._config_version = config_version
        self._masking = self._masking_for(cam.privacy_masks)
        self._face_blur = face_blur
        self._tracker = MaskTracker()  # recording thread only
        self.pool = pool if pool is not None else FramePool.of_mib(DEFAULT_BUDGET_MIB)
        self.queue_frames = queue_frames(
            int(self.pool.budget * budget_share),
            i420_size(cam.width, cam.height),
            cam.fps,
            queue_seconds,
        )
        self._queue: queue.Queue[tuple[Frame, Committed] | object] = queue.Queue(
            maxsize=self.queue_frames
        )
        self._source = open_source(cam)
        self._source.pool = self.pool
        self._capture = CaptureLoop(
            self._source, self._on_frame, name=cam.id, on_drop=self._on_budget_drop
        )
        self._recorder = threading.Thread(target=self._record, name=f"record-{cam.id}", daemon=True)
        self.started_mono = time.monotonic()
        # Written by the capture thread:
        self.frames_in = 0
        self.frames_dropped = 0
        self.last_frame_mono: float | None = None
        self.last_frame: Frame | None = None  # holds a pool reference; see _preview_lock
        #: Held while the preview slot changes hands and while a reader copies it, so the
        #: buffer is never back in the pool (refilled with an unmasked picture) during a copy.
        self._preview_lock = threading.Lock()
        # Written by the recording thread:
        self.frames_encoded = 0
        self.time_gaps = 0  # pauses over encoder.TIME_GAP_S, kept as gaps in the recording
        self.time_gap_s = 0.0
        self._recorded_until_ns: int | None = None  # set at start, read by the recording thread
        self.segments_written = 0
        self.bytes_written = 0
        self.sink_errors = 0
        self.last_segment: MediaSegment | None = None
        self.last_write_mono: float | None = None
        self.heartbeat_mono = time.monotonic()
        self.recorder_error: str | None = None
        #: Why the recording thread ended on its own; None while it runs or after a normal end
        #: (stop requested, finite source recorded to its end). Written once, by that thread.
        self.recorder_failure: str | None = None

    # --- control -----------------------------------------------------------------------------

    def start(self) -> None:
        # Asked before this run writes anything: the end of what earlier runs recorded.
        self._recorded_until_ns = self._sink.recorded_until_ns(self.cam.id)
        log.info(
            "[%s] starting: %s, %dx%d @ %.2f fps, %d privacy mask(s) covering %.1f %%",
            self.cam.id,
            self._source.description,
            self.cam.width,
            self.cam.height,
            self.cam.fps,
            len(self.cam.privacy_masks),
            100.0 * self.masker.coverage,
        )
        self._recorder.start()
        self._capture.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop capture, finish the segment being recorded, and wait for both threads.

        Returns within about twice ``timeout`` whatever state the threads are in: a dead
        recording thread never takes anything off a full queue, so nothing here waits for it.
        """
        self._capture.stop()
        self._capture.join(timeout)
        deadline = time.monotonic() + timeout
        while self._recorder.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.2)  # waits while the recorder drains the queue
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._recorder.join(max(0.0, deadline - time.monotonic()))
        if self._recorder.is_alive():
            log.error("[%s] recording thread did not finish within %.0f s", self.cam.id, timeout)
            return  # it may still take frames off the queue: leave them to it
        while True:  # frames left behind by a recorder that died: back to the pool
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple):
                self.pool.release(item[0])
        with self._preview_lock:
            last, self.last_frame = self.last_frame, None
        self.pool.release(last)

    def mask_set(self, masks: Sequence[PrivacyMaskConfig] | None = None) -> MaskSet:
        """The canonical mask set (running, or ``masks`` at this camera's size)."""
        chosen = self.cam.privacy_masks if masks is None else masks
        return MaskSet.of(self.cam.id, chosen, self.cam.width, self.cam.height)

    def _masking_for(self, masks: Sequence[PrivacyMaskConfig]) -> tuple[PrivacyMasker, Committed]:
        digest = MaskSet.of(self.cam.id, masks, self.cam.width, self.cam.height).digest
        masker = PrivacyMasker(masks, self.cam.width, self.cam.height)
        return masker, Committed(digest, self._config_version)

    def set_config_version(self, version: bytes) -> None:
        """The configuration changed (SIGHUP) but not the masks: later segments commit to the
        new version."""
        self._config_version = version
        masker, committed = self._masking
        self._masking = masker, Committed(committed.mask_set, version)

    def set_masks(
        self, masks: Sequence[PrivacyMaskConfig], config_version: bytes | None = None
    ) -> None:
        """Replace the privacy masks (SIGHUP); the next captured frame uses the new ones."""
        if config_version is not None:
            self._config_version = config_version
        masking = self._masking_for(masks)
        masker = masking[0]
        # The source's masks (applied before its conversion) first: for a frame caught between
        # the two, old and new masks are both applied, whichever of them is the larger.
        self._source.set_privacy_masks(masks)
        self._masking = masking
        self.cam = self.cam.model_copy(update={"privacy_masks": list(masks)})
        log.info(
            "[%s] privacy masks reloaded: %d mask(s) covering %.1f %%",
            self.cam.id,
            len(masks),
            100.0 * masker.coverage,
        )

    def add_observer(self, observer: FrameObserver) -> None:
        # A new list, not a change of the one the capture thread may be walking.
        self._observers = [*self._observers, observer]

    def remove_observer(self, observer: FrameObserver) -> None:
        self._observers = [o for o in self._observers if o != observer]

    @property
    def masker(self) -> PrivacyMasker:
        return self._masking[0]

    def preview_frame(self) -> Frame | None:
        """A copy of the latest masked frame (installer preview, self-test), or None."""
        with self._preview_lock:
            return None if self.last_frame is None else self.last_frame.copy()

    def alive(self) -> bool:
        """True while the recording thread runs and has looked at its queue recently."""
        return self._recorder.is_alive() and time.monotonic() - self.heartbeat_mono < 10.0

    def finished(self) -> bool:
        """True once a finite source has ended and everything it gave is recorded."""
        return not self._recorder.is_alive() and self._capture.join(0)

    # --- capture thread ----------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        try:
            self._mask_and_hand_over(frame)
        except BaseException:
            self.pool.release(frame)  # the capture loop fails loudly; the budget stays right
            raise

    def _mask_and_hand_over(self, frame: Frame) -> None:
        # Mask first: nothing upstream of this line may keep, send or analyse the frame.
        masker, committed = self._masking  # one read: the commitment of the masker applied
        masker.apply(frame)
        if self._face_blur is not None:
            self._face_blur.apply(frame)  # metering mode: faces pixelated before anything else
        self.frames_in += 1
        self.last_frame_mono = time.monotonic()
        self.pool.retain(frame)
        with self._preview_lock:
            previous, self.last_frame = self.last_frame, frame  # masked: what a preview shows
        self.pool.release(previous)
        for observer in self._observers:
            try:
                observer(frame)
            except Exception:  # an observer must never stop recording
                log.exception("[%s] frame observer failed", self.cam.id)
        try:
            # The queue takes over the capture thread's reference.
            self._queue.put_nowait((frame, committed))
        except queue.Full:
            self.pool.release(frame)
            self._count_drop()

    def _on_budget_drop(self, _index: int) -> None:
        """A frame the source received but the frame memory budget had no buffer for."""
        self.frames_in += 1
        self.last_frame_mono = time.monotonic()
        self._count_drop()

    def _count_drop(self) -> None:
        self.frames_dropped += 1
        if self.frames_dropped in (1, 10, 100) or self.frames_dropped % 1000 == 0:
            log.warning(
                "[%s] recording is late: %d frame(s) dropped so far",
                self.cam.id,
                self.frames_dropped,
            )

    # --- recording thread --------------------------------------------------------------------

    def _record(self) -> None:
        try:
            ended_normally = self._record_until_stop()
        except BaseException as exc:  # whatever it is, the daemon must learn the thread died
            log.exception("[%s] recording thread died", self.cam.id)
            self.recorder_error = self.recorder_failure = f"{type(exc).__name__}: {exc}"
            return
        if not ended_normally:
            self.recorder_failure = self.recorder_error or "recording stopped"

    def _record_until_stop(self) -> bool:
        """Record until asked to stop or the source ends (True); False when giving up."""
        failures = 0
        while True:
            try:
                signer = None if self._media_signing is None else MediaSigner(self._media_signing)
                encoder = SegmentEncoder(
                    self.cam.id,
                    self.cam.width,
                    self.cam.height,
                    self.cam.fps,
                    self.cam.encoder,
                    signer=signer,
                )
            except EdgeError as exc:
                self.recorder_error = str(exc)
                log.error("[%s] cannot start the encoder: %s", self.cam.id, exc)
                return False
            self._tracker.reset()
            try:
                stopped = self._encode_until_stop(encoder)
            except EdgeError as exc:
                # A fresh encoder usually recovers (a hardware encoder hiccup); only the
                # segment in flight is lost. Give up after repeated failures.
                failures += 1
                self.recorder_error = str(exc)
                encoder.close()
                if failures >= 5:
                    log.error(
                        "[%s] encoding failed %d times, recording stops: %s",
                        self.cam.id,
                        failures,
                        exc,
                    )
                    return False
                log.error("[%s] encoding failed, restarting the encoder: %s", self.cam.id, exc)
                time.sleep(1.0)
                continue
            if stopped:
                try:
                    self._write(encoder.flush())
                except EdgeError as exc:
                    log.error("[%s] could not finish the last segment: %s", self.cam.id, exc)
                finally:
                    encoder.close()
                return True

    def _encode_until_stop(self, encoder: SegmentEncoder) -> bool:
        """Encode queued frames until asked to stop (returns True); raises on encoder failure."""
        gaps_seen = 0
        while True:
            self.heartbeat_mono = time.monotonic()
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                if self._capture.join(0) and self._queue.empty():
                    return True  # a finite source ended: record what is left
                continue
            if item is _STOP:
                return True
            assert isinstance(item, tuple)
            frame, committed = item
            self._tracker.note(frame.index, frame.wall_ns, committed)
            try:
                segments = encoder.encode(frame)  # the encoder copies the frame: release it
            finally:
                self.pool.release(frame)
            self.frames_encoded += 1
            if len(encoder.time_gaps) > gaps_seen:
                for _wall_ns, seconds in encoder.time_gaps[gaps_seen:]:
                    self.time_gaps += 1
                    self.time_gap_s += seconds
                gaps_seen = len(encoder.time_gaps)
            if segments:
                self.recorder_error = None
            self._write(segments)

    def _write(self, segments: list[MediaSegment]) -> None:
        for cut in segments:
            masks = self._tracker.commitments(cut.first_frame_index, cut.frame_count)
            segment = dataclasses.replace(cut, masks=masks)
            if self._recorded_until_ns is not None:
                self._note_restart_gap(segment.start_wall_ns - self._recorded_until_ns)
                self._recorded_until_ns = None
            try:
                self._sink.write(segment)
            except EdgeError as exc:
                self.sink_errors += 1
                log.error("[%s] segment %d not recorded: %s", self.cam.id, segment.sequence, exc)
                continue
            self.segments_written += 1
            self.bytes_written += len(segment.media)
            self.last_segment = segment
            self.last_write_mono = time.monotonic()

    def _note_restart_gap(self, gap_ns: int) -> None:
        """Nothing was recorded between the previous run's last segment and this run's first
        (edged stopped or crashed, the camera restarted): a gap like any other."""
        if gap_ns <= TIME_GAP_S * 1e9:
            return
        self.time_gaps += 1
        self.time_gap_s += gap_ns / 1e9
        log.warning(
            "[%s] recording resumes after %.1f s without recording (previous run)",
            self.cam.id,
            gap_ns / 1e9,
        )

    # --- diagnostics -------------------------------------------------------------------------

    def capture_state(self) -> str:
        stats = self._capture.stats()
        return f"{stats.state}: {stats.reason}"

    def snapshot(self) -> CameraStatus:
        now = time.monotonic()
        capture = self._capture.stats()
        last = self.last_segment
        uptime = max(now - self.started_mono, 1e-9)
        return {
            "id": self.cam.id,
            "source": self._source.description,
            "width": self.cam.width,
            "height": self.cam.height,
            "fps_configured": self.cam.fps,
            "capture": {
                "state": capture.state.value,
                "reason": capture.reason,
                "frames_in": capture.frames_in,
                "source_gaps": capture.source_gaps,
                "frames_lost": capture.frames_lost,
                "reconnects": capture.reconnects,
                "last_frame_age_s": capture.last_frame_age_s,
                "fps": capture.fps,
            },
            "frames_in": self.frames_in,
            "frames_dropped": self.frames_dropped,
            "frames_encoded": self.frames_encoded,
            "time_gaps": self.time_gaps,
            "time_gap_s": round(self.time_gap_s, 1),
            "fps_in": round(self.frames_in / uptime, 2),
            "last_frame_age_s": None
            if self.last_frame_mono is None
            else round(now - self.last_frame_mono, 3),
            "masks": len(self.cam.privacy_masks),
            "mask_coverage_percent": round(100.0 * self.masker.coverage, 2),
            "segments_written": self.segments_written,
            "bytes_written": self.bytes_written,
            "sink_errors": self.sink_errors,
            "last_segment_sequence": None if last is None else last.sequence,
            "last_write_age_s": None
            if self.last_write_mono is None
            else round(now - self.last_write_mono, 3),
            "recorder_alive": self.alive(),
            "recorder_error": self.recorder_error,
        }

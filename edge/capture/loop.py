"""The capture thread of one camera: open, read, hand over, reconnect.

:class:`CaptureLoop` drives one :class:`~edge.capture.base.FrameSource` from one thread and
calls ``on_frame`` in that same thread for every frame, so whatever the daemon does there
(privacy masking, first) happens before any other thread can see the frame. A transient
:class:`~edge.errors.CaptureError` closes the source, waits, and reopens it; the wait grows
exponentially with full jitter (so a street of cameras behind one rebooting switch does not
reconnect in step) and starts small again once the source has run for ``backoff_reset_s``.
During a longer wait the loop asks the source every ``probe_interval`` whether the camera answers
(:meth:`~edge.capture.base.FrameSource.answers`): once a camera that stopped answering answers
again, the wait ends and the source is reopened at once.

The loop is an explicit state machine::

    STARTING ──open ok──► RUNNING ──end of a finite source──► ENDED
        ▲  │                 │
        │  └─transient error─┴─► BACKOFF ──wait over──► STARTING
        │                          (other errors, or on_frame raising ──► FAILED)
    stop() from any state ──► STOPPED

Frame indexes keep increasing across reconnects: a source restarts its own count when it is
reopened, the loop adds an offset so the daemon never sees an index twice.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from ..backoff import Backoff
from ..errors import CaptureError, FrameBudgetError
from ..frames import Frame
from .base import FrameSource

log = logging.getLogger(__name__)


class CaptureState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    ENDED = "ended"
    FAILED = "failed"
    STOPPED = "stopped"


FINAL_STATES = frozenset({CaptureState.ENDED, CaptureState.FAILED, CaptureState.STOPPED})


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """A consistent snapshot of one capture loop, for status lines and diagnostics."""

    state: CaptureState
    reason: str
    frames_in: int
    source_gaps: int
    """Times the source's own frame index jumped (frames the camera or network lost)."""
    frames_lost: int
    """Frames missing in those jumps."""
    reconnects: int
    """Times the source was reopened after a failure."""
    last_frame_age_s: float | None
    """Seconds since the last frame was handed over; None before the first one."""
    fps: float | None
    """Frame rate measured over the last couple of seconds; None until two frames arrived."""


class CaptureLoop:
    """One thread reading one source and handing every frame to ``on_frame``.

    ``clock`` (seconds, monotonic), ``sleep`` and ``rng`` are injectable so back-off can be
    tested exactly; by default ``sleep`` waits on the stop event, so :meth:`stop` cuts a
    back-off short. A blocked ``read`` is not interrupted: sources bound their reads (socket
    timeouts, one frame period), so :meth:`stop` takes effect within one of them.
    """

    def __init__(
        self,
        source: FrameSource,
        on_frame: Callable[[Frame], None],
        *,
        name: str,
        on_drop: Callable[[int], None] | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        backoff_reset_s: float = 60.0,
        probe_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        if probe_interval <= 0:
            raise ValueError("need 0 < probe_interval")
        self.source = source
        self.name = name
        self._on_frame = on_frame
        #: Called in the capture thread with the index of a frame the source received but the
        #: frame memory budget had no buffer for (edge.framepool).
        self._on_drop = on_drop
        self._backoff_reset_s = backoff_reset_s
        self._probe_interval = probe_interval
        self._clock = clock
        self._stop_event = threading.Event()
        self._sleep = sleep if sleep is not None else self._wait_unless_stopped
        # Full jitter spreads a street's reconnections in time; only the capture thread uses it.
        self._backoff = Backoff(backoff_initial, backoff_max, rng, jitter=1.0)
        self._thread: threading.Thread | None = None
        self._index_offset = 0  # only the capture thread touches it
        self._next_index = 0  # only the capture thread touches it
        self._last_source_index: int | None = None  # only the capture thread touches it
        #: The exception that made the loop FAILED, for the supervisor.
        self.error: BaseException | None = None
        # _lock protects the fields below: the capture thread writes them, stats() and
        # state readers in any thread (daemon supervisor, control socket) read them. It is
        # never held while calling the source or on_frame, so readers never wait on a camera.
        self._lock = threading.Lock()
        self._state = CaptureState.STARTING
        self._reason = "not started"
        self._frames_in = 0
        self._source_gaps = 0
        self._frames_lost = 0
        self._reconnects = 0
        self._last_frame_at: float | None = None
        self._recent: deque[float] = deque(maxlen=64)  # clock() of recent frames, for fps

    # --- state -------------------------------------------------------------------------------

    @property
    def state(self) -> CaptureState:
        with self._lock:
            return self._state

    def _set_state(self, state: CaptureState, reason: str) -> None:
        with self._lock:
            old, self._state, self._reason = self._state, state, reason
        if state is CaptureState.FAILED:
            level = logging.ERROR
        elif state is CaptureState.BACKOFF:
            level = logging.WARNING
        else:
            level = logging.INFO
        if old is state:  # e.g. the first STARTING: no transition to show, only the reason
            log.log(level, "%s: %s: %s", self.name, state, reason)
        else:
            log.log(level, "%s: %s -> %s: %s", self.name, old, state, reason)

    def stats(self) -> CaptureStats:
        with self._lock:
            age = None if self._last_frame_at is None else self._clock() - self._last_frame_at
            fps = None
            if len(self._recent) >= 2 and self._recent[-1] > self._recent[0]:
                fps = (len(self._recent) - 1) / (self._recent[-1] - self._recent[0])
            return CaptureStats(
                self._state,
                self._reason,
                self._frames_in,
                self._source_gaps,
                self._frames_lost,
                self._reconnects,
                age,
                fps,
            )

    # --- thread control ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: capture loop already started")
        self._thread = threading.Thread(target=self.run, name=f"capture-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to stop; it closes the source and ends in STOPPED (unless already final)."""
        self._stop_event.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has finished."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _wait_unless_stopped(self, seconds: float) -> None:
        self._stop_event.wait(seconds)

    # --- the capture thread ------------------------------------------------------------------

    def run(self) -> None:
        """The loop itself; :meth:`start` runs it in a thread, tests may call it directly."""
        try:
            self._run()
        finally:
            self._close_source()
            if self.state not in FINAL_STATES:
                self._set_state(CaptureState.STOPPED, "stop requested")

    def _run(self) -> None:
        self._set_state(CaptureState.STARTING, f"opening {self.source.description}")
        while not self._stop_event.is_set():
            try:
                self.source.open()
            except CaptureError as exc:
                if not self._back_off(exc, opened_at=None):
                    return
                continue
            except Exception as exc:  # noqa: BLE001 - a source bug must not kill the daemon silently
                self._fail(exc, "opening the source")
                return
            opened_at = self._clock()
            self._last_source_index = None
            self._set_state(CaptureState.RUNNING, f"{self.source.description} delivering frames")
            if not self._pump(opened_at):
                return

    def _pump(self, opened_at: float) -> bool:
        """Read until failure or stop; False when the loop must end."""
        while not self._stop_event.is_set():
            try:
                frame = self.source.read()
            except FrameBudgetError as spent:
                # Received, then dropped for want of memory: counted as a frame in (no gap in
                # the source) and a drop, as a frame a full recording queue refuses.
                index = self._account_index(spent.index)
                if self._on_drop is not None:
                    self._on_drop(index)
                continue
            except CaptureError as exc:
                return self._back_off(exc, opened_at=opened_at)
            except Exception as exc:  # noqa: BLE001 - see _run
                self._fail(exc, "reading the source")
                return False
            if frame is None:
                self._set_state(CaptureState.ENDED, f"end of {self.source.description}")
                return False
            self._account(frame)
            try:
                self._on_frame(frame)
            except Exception as exc:  # noqa: BLE001 - the frame's consumer failed: stop, loudly
                self._fail(exc, f"handling frame {frame.index}")
                return False
        return False

    def _account(self, frame: Frame) -> None:
        """Renumber ``frame`` into the loop's increasing index and update the counters."""
        frame.index = self._account_index(frame.index)

    def _account_index(self, source_index: int) -> int:
        """The loop's index for the source's ``source_index``; updates the counters."""
        jump = 0
        if self._last_source_index is not None:
            jump = source_index - self._last_source_index - 1
        if self._last_source_index is None or jump < 0:
            # First frame since (re)opening, or a source counting backwards: continue our count.
            self._index_offset = self._next_index - source_index
            jump = 0
        self._last_source_index = source_index
        index = max(self._next_index, source_index + self._index_offset)
        self._next_index = index + 1
        now = self._clock()
        with self._lock:
            self._frames_in += 1
            if jump > 0:
                self._source_gaps += 1
                self._frames_lost += jump
            self._last_frame_at = now
            self._recent.append(now)
        return index

    def _back_off(self, exc: CaptureError, *, opened_at: float | None) -> bool:
        """Close, wait and let the caller reopen; False when the error is final or stop came."""
        self._close_source()
        if not exc.transient:
            self.error = exc
            self._set_state(CaptureState.FAILED, str(exc))
            return False
        if opened_at is not None and self._clock() - opened_at >= self._backoff_reset_s:
            self._backoff.reset()  # it ran long enough: a new incident, not a flapping one
        delay = self._backoff.next_delay()
        attempt = self._backoff.failures
        self._set_state(CaptureState.BACKOFF, f"{exc}; retry {attempt} in {delay:.2f} s")
        self._wait_for_retry(delay)
        if self._stop_event.is_set():
            return False
        with self._lock:
            self._reconnects += 1
        self._set_state(
            CaptureState.STARTING, f"reopening {self.source.description} (retry {attempt})"
        )
        return True

    def _wait_for_retry(self, delay: float) -> None:
        """Sleep ``delay``, cut short when the camera, silent during the wait, answers again.

        Only a change from silent to answering ends the wait: a camera that answers all along
        (up, but refusing the stream: a wrong password) keeps its full back-off.
        """
        if delay <= 2 * self._probe_interval or self.source.answers() is None:
            # A short wait is not worth probing; a source that cannot tell waits it all.
            self._sleep(delay)
            return
        # Bounded by the clock (probes take time) and by what was slept (an injected sleep
        # need not move the clock).
        deadline = self._clock() + delay
        slept = 0.0
        went_silent = False
        while not self._stop_event.is_set():
            left = min(deadline - self._clock(), delay - slept)
            if left <= 0:
                return
            answers = self.source.answers()
            if answers and went_silent:
                log.info("%s: %s answers again, reopening now", self.name, self.source.description)
                return
            went_silent = went_silent or not answers
            step = min(left, self._probe_interval)
            self._sleep(step)
            slept += step

    def _fail(self, exc: Exception, doing: str) -> None:
        self.error = exc
        log.exception("%s: unexpected error while %s", self.name, doing)
        self._set_state(CaptureState.FAILED, f"{doing}: {type(exc).__name__}: {exc}")

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as exc:  # noqa: BLE001 - closing must not hide the original problem
            log.warning("%s: closing %s failed: %s", self.name, self.source.description, exc)

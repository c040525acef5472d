"""Frame buffers within one memory budget for the whole unit.

Raw frames are the unit's largest memory: one 4K I420 frame is 12 MiB, and a recording queue of
two seconds at 25 fps would hold 600 MiB of them. Every full-size frame edged holds (the
capture buffer, the recording queue, the frame kept for the installer preview, a file source's
picture kept for a repeat) comes from one :class:`FramePool`, and the analytics shared memory
is reserved against the same budget (:meth:`FramePool.reserve`), so the unit's frame memory
has one ceiling, ``[memory] frame_budget_mib``, whatever the number and size of its cameras.

When a frame would take the pool past its budget, :meth:`FramePool.acquire` allocates nothing
and returns ``None``: the source raises :class:`edge.errors.FrameBudgetError` and the
pipeline drops the frame and counts it exactly as it counts a full recording queue.

Buffers are reference-counted: the capture thread acquires one (one reference), the recording
queue and the preview slot each :meth:`~FramePool.retain` what they keep, and each holder
:meth:`~FramePool.release` s it when done; at zero the buffer goes back to the free list of its
size, to be reused without a new allocation, or, beyond :data:`SPARE_BUFFERS`, back to the
system (each buffer is a mapping of its own), so that a burst leaves no lasting growth. A
buffer is never handed out while anyone holds it, so a frame kept for the preview is never
overwritten by the next, still unmasked, picture.

Threads: any thread may call any method; ``_lock`` protects the counters, the reference counts
and the free lists. The lock is held for a few dictionary operations, never during a copy.
"""

from __future__ import annotations

import mmap
import threading
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .frames import Frame, i420_size

MIB = 1024 * 1024

#: The default budget, sized for a 2 GiB unit: a quarter of what is left once the system,
#: edged, the analytics processes and the page cache of the vault have theirs.
DEFAULT_BUDGET_MIB = 384
#: Free buffers of one size kept for reuse. A camera whose encoder keeps up cycles through a
#: handful of buffers without allocating; the ones a burst needed (the encoder late for a
#: moment, the queue filling) are given back when freed, so memory returns to its steady size.
SPARE_BUFFERS = 1


def _allocate(nbytes: int) -> np.ndarray[tuple[int], np.dtype[np.uint8]]:
    """An anonymous mapping of its own: unmapped, so back to the system, when the last view
    of it goes, rather than left in the allocator's heap as a freed block often is."""
    mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(mapping, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """The pool's accounting, in bytes (``allocated`` counts free and held buffers)."""

    budget: int
    reserved: int
    allocated: int
    in_use: int
    peak_allocated: int
    buffers: int
    refused: int


def queue_frames(
    budget_bytes: int, frame_bytes: int, fps: float, seconds: float, *, held_elsewhere: int = 3
) -> int:
    """How many frames a camera's recording queue may hold: ``seconds`` of video, but no more
    than fit in its share of the budget once the frames held outside the queue (the one being
    captured, the preview's, the one being encoded) are counted; at least 2."""
    by_time = int(fps * seconds)
    by_memory = budget_bytes // max(1, frame_bytes) - held_elsewhere
    return max(2, min(by_time, by_memory))


class _Lease:
    """One handing-out of a buffer: a frame from an earlier lease of the same buffer (kept by
    mistake) can neither retain nor release the current holder's buffer."""

    __slots__ = ("data", "refs")

    def __init__(self, data: np.ndarray[tuple[int], np.dtype[np.uint8]]) -> None:
        self.data = data
        self.refs = 1


class FramePool:
    """I420 frame buffers of any size, all within ``budget_bytes``."""

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes <= 0:
            raise ConfigError(f"frame memory budget must be positive, not {budget_bytes}")
        self.budget = budget_bytes
        self._lock = threading.Lock()
        self._free: dict[int, list[np.ndarray[tuple[int], np.dtype[np.uint8]]]] = {}
        self._held: dict[int, _Lease] = {}  # id(lease) -> lease, while referenced
        self._reserved = 0
        self._allocated = 0
        self._in_use = 0
        self._peak = 0
        self._refused = 0

    @classmethod
    def of_mib(cls, mib: int) -> FramePool:
        return cls(mib * MIB)

    def set_budget(self, budget_bytes: int) -> None:
        """A new budget (configuration reload); buffers beyond it are given back as they free."""
        with self._lock:
            self.budget = budget_bytes
            over = self._reserved + self._allocated - budget_bytes
            if over > 0:
                self._trim_free(over)

    # --- reservations (analytics shared memory) ----------------------------------------------

    def reserve(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` held elsewhere (shared memory) against the budget, or refuse.

        Free buffers are given back first to make room; buffers in use are not touched, so a
        reservation made while recording runs may fail where the same one at start-up would not.
        """
        with self._lock:
            if self._reserved + self._allocated + nbytes > self.budget:
                self._trim_free(self._reserved + self._allocated + nbytes - self.budget)
            if self._reserved + self._allocated + nbytes > self.budget:
                raise ConfigError(
                    f"{what} needs {nbytes / MIB:.1f} MiB of frame memory but only "
                    f"{(self.budget - self._reserved - self._allocated) / MIB:.1f} MiB of "
                    f"memory.frame_budget_mib ({self.budget / MIB:.0f} MiB) is left"
                )
            self._reserved += nbytes

    def unreserve(self, nbytes: int) -> None:
        with self._lock:
            self._reserved = max(0, self._reserved - nbytes)

    # --- frames ------------------------------------------------------------------------------

    def acquire(self, width: int, height: int, index: int = 0) -> Frame | None:
        """A frame of this size (contents undefined) holding one reference, or ``None`` when
        its buffer would take the pool past the budget (nothing is allocated then)."""
        nbytes = i420_size(width, height)
        with self._lock:
            free = self._free.get(nbytes)
            data = free.pop() if free else None
            if data is None:
                over = self._reserved + self._allocated + nbytes - self.budget
                if over > 0:
                    self._trim_free(over)  # buffers of another size (a camera reconfigured)
                if self._reserved + self._allocated + nbytes > self.budget:
                    self._refused += 1
                    return None
                self._allocated += nbytes
                self._peak = max(self._peak, self._allocated)
        if data is None:
            # Allocated outside the lock: the pages are only touched when the frame is written.
            try:
                data = _allocate(nbytes)
            except (MemoryError, OSError):  # less memory than the budget promised: a drop too
                with self._lock:
                    self._allocated -= nbytes
                    self._refused += 1
                return None
        lease = _Lease(data)
        frame = Frame(data, width, height, index, 0, 0)
        frame.pool_buffer = lease
        with self._lock:
            self._held[id(lease)] = lease
            self._in_use += nbytes
        return frame

    def retain(self, frame: Frame) -> None:
        """One more holder of ``frame``'s buffer (no-op for a frame not from this pool)."""
        lease = frame.pool_buffer
        with self._lock:
            if lease is not None and self._held.get(id(lease)) is lease:
                assert isinstance(lease, _Lease)
                lease.refs += 1

    def release(self, frame: Frame | None) -> None:
        """One holder less; at zero the buffer is free for the next frame of its size."""
        if frame is None:
            return
        lease = frame.pool_buffer
        with self._lock:
            if lease is None or self._held.get(id(lease)) is not lease:
                return  # not ours, or released more often than held: never free it twice
            assert isinstance(lease, _Lease)
            lease.refs -= 1
            if lease.refs > 0:
                return
            del self._held[id(lease)]
            size = lease.data.size
            self._in_use -= size
            free = self._free.setdefault(size, [])
            if len(free) >= SPARE_BUFFERS or self._reserved + self._allocated > self.budget:
                self._allocated -= size  # a burst is over, or the budget was lowered
                return
            free.append(lease.data)

    def owns(self, frame: Frame) -> bool:
        lease = frame.pool_buffer
        with self._lock:
            return lease is not None and self._held.get(id(lease)) is lease

    def trim(self) -> None:
        """Give every free buffer back to the system (a camera stopped or changed size)."""
        with self._lock:
            self._trim_free(self._allocated)

    def _trim_free(self, nbytes: int) -> None:
        """Drop free buffers until ``nbytes`` are given back or none is left (lock held)."""
        for size in sorted(self._free):
            free = self._free[size]
            while free and nbytes > 0:
                free.pop()
                self._allocated -= size
                nbytes -= size
            if not free:
                del self._free[size]
            if nbytes <= 0:
                return

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(
                budget=self.budget,
                reserved=self._reserved,
                allocated=self._allocated,
                in_use=self._in_use,
                peak_allocated=self._peak,
                buffers=len(self._held) + sum(len(f) for f in self._free.values()),
                refused=self._refused,
            )

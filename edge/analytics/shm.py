"""Frame slots in shared memory between the capture thread and the analytics process.

One ``SharedMemory`` block holds ``slots`` downscaled I420 frames and, per slot, its metadata
(index, monotonic and wall-clock capture times). Ownership of a slot passes by message, never
by shared flags, so no lock is shared between the processes:

- the parent (capture thread) keeps the list of *free* slots; it copies a frame into one, then
  posts ``(slot, index)`` on the ``ready`` queue. With no free slot it drops the frame;
- the child takes every posted slot, keeps the newest, posts the older ones straight back on
  the ``free`` queue (frames it was too late for), copies the newest out and posts it back.

Queue messages go through a pipe (a system call on each side), which also orders the memory
writes of the frame before the message that announces it, on ARM as on x86.

Blocks are named ``edge-ring-<PID of edged>-<random>``: when edged and every helper died too
abruptly to unlink one (SIGKILL of the whole group), the next start removes the blocks of
PIDs that no longer run (:func:`remove_stale_rings`).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..frames import i420_size

log = logging.getLogger(__name__)

META_FIELDS = 3  # index, mono_ns, wall_ns
RING_PREFIX = "edge-ring-"
SHM_DIR = Path("/dev/shm")  # noqa: S108 - where Linux keeps POSIX shared memory
_RING_RE = re.compile(re.escape(RING_PREFIX) + r"(\d+)-[0-9a-f]+")
U8 = npt.NDArray[np.uint8]


def analysis_geometry(width: int, height: int, max_width: int) -> tuple[int, int, int]:
    """(decimation step, width, height) of the analysed frame: the smallest integer step that
    brings the width to at most ``max_width``, dimensions kept even for I420."""
    step = max(1, -(-width // max_width))
    return step, (width // step) // 2 * 2, (height // step) // 2 * 2


class FrameRing:
    """The shared block seen from either side. ``create`` in the parent, ``attach`` in the child."""

    def __init__(
        self, shm: shared_memory.SharedMemory, slots: int, width: int, height: int, *, owner: bool
    ) -> None:
        self.shm = shm
        self.slots = slots
        self.width = width
        self.height = height
        self.owner = owner
        self.frame_bytes = i420_size(width, height)
        buf = np.ndarray((shm.size,), dtype=np.uint8, buffer=shm.buf)
        meta_bytes = slots * META_FIELDS * 8
        self.meta: npt.NDArray[np.int64] = (
            buf[:meta_bytes].view(np.int64).reshape(slots, META_FIELDS)
        )
        self.frames: U8 = buf[meta_bytes : meta_bytes + slots * self.frame_bytes].reshape(
            slots, self.frame_bytes
        )

    @staticmethod
    def size_of(slots: int, width: int, height: int) -> int:
        """Bytes of the shared block for ``slots`` frames of this size."""
        return slots * (META_FIELDS * 8 + i420_size(width, height))

    @classmethod
    def create(cls, slots: int, width: int, height: int) -> FrameRing:
        size = cls.size_of(slots, width, height)
        name = f"{RING_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        return cls(shm, slots, width, height, owner=True)

    @classmethod
    def attach(cls, name: str, slots: int, width: int, height: int) -> FrameRing:
        # The spawned child shares the parent's resource tracker, so attaching registers the
        # name the parent already registered; the parent alone unlinks it.
        shm = shared_memory.SharedMemory(name=name)
        return cls(shm, slots, width, height, owner=False)

    @property
    def name(self) -> str:
        return self.shm.name

    def planes(self, slot: int) -> tuple[U8, U8, U8]:
        """Views of a slot's Y, U and V planes (no copy)."""
        w, h = self.width, self.height
        data = self.frames[slot]
        luma = w * h
        return (
            data[:luma].reshape(h, w),
            data[luma : luma + luma // 4].reshape(h // 2, w // 2),
            data[luma + luma // 4 :].reshape(h // 2, w // 2),
        )

    def write_decimated(
        self, slot: int, y: U8, u: U8, v: U8, step: int, *, index: int, mono_ns: int, wall_ns: int
    ) -> None:
        """Copy a full-size masked frame into ``slot``, keeping every ``step``-th pixel.

        Plain decimation, not filtering: it costs a strided copy in the capture thread, and
        since the frame is masked already, it can only ever pick masked pixels in masked areas.
        """
        dy, du, dv = self.planes(slot)
        h, w = dy.shape
        dy[...] = y[: h * step : step, : w * step : step]
        du[...] = u[: h // 2 * step : step, : w // 2 * step : step]
        dv[...] = v[: h // 2 * step : step, : w // 2 * step : step]
        self.meta[slot] = (index, mono_ns, wall_ns)

    def close(self) -> None:
        # Drop our numpy views first: SharedMemory refuses to close with exported buffers.
        del self.meta
        del self.frames
        self.shm.close()
        if self.owner:
            self.shm.unlink()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: not ours to judge
    return True


def remove_stale_rings(shm_dir: Path = SHM_DIR) -> list[str]:
    """Unlink the frame rings left by edged processes that no longer run; their names."""
    removed: list[str] = []
    try:
        entries = list(shm_dir.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _RING_RE.fullmatch(entry.name)
        if m is None or _running(int(m.group(1))):
            continue
        try:
            entry.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove the stale frame ring %s: %s", entry, exc)
            continue
        removed.append(entry.name)
    if removed:
        log.warning("removed %d frame ring(s) left by a killed edged: %s", len(removed), removed)
    return removed

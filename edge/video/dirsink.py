"""The plain directory sink: segments as playable files, written crash-safely.

Layout under ``root``::

    <camera>/init.mp4                         init segment of the current recording session
    <camera>/init-<sha256[:16]>.mp4           the same bytes, named by content, kept for every
                                              session (a sidecar names the one its segment needs)
    <camera>/<YYYYMMDD>/<HH>/seg-<n:08d>.m4s  one CMAF media segment (UTC date and hour of its
                                              first frame)
    <camera>/<YYYYMMDD>/<HH>/seg-<n:08d>.json its times, frame count, digest and init file

``n`` continues across recording sessions (a restart never overwrites footage): it is the
segment's own ``sequence`` plus the number of segments the camera already had on disk when the
session began. To play: ``cat init.mp4 2026*/*/seg-*.m4s > clip.mp4`` or
``cat init.mp4 seg-00000042.m4s | ffplay -``.

Every file is written atomically: a hidden temporary file in the same directory, ``fsync``,
``rename``, ``fsync`` of the directory. A crash leaves at most a ``.*.tmp`` file, which never
matches ``seg-*.m4s`` and is removed when the sink next writes in that directory. The encrypted
vault replaces this sink in production; it stays useful for demos and tests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import VaultError
from ..unitkeys import fsync_dir, write_atomic
from .base import MediaSegment, SegmentSink

log = logging.getLogger(__name__)

SEGMENT_RE = re.compile(r"^seg-(\d{8,})\.m4s\Z")
#: Camera ids as the configuration allows them (they name directories).
CAMERA_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
TEMP_SUFFIX = ".tmp"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new, never half.

    The temporary name starts with a dot and ends with ``.tmp`` so no reader mistakes it for a
    finished file (:func:`remove_stale_temps` clears those a crash left).
    """
    try:
        write_atomic(path, data, mode=0o640)
    except OSError as exc:
        raise VaultError(f"writing {path}: {exc.strerror or exc}") from exc


def _make_dirs(path: Path) -> None:
    """``mkdir -p`` that also makes each new directory entry durable."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o750)
        except FileExistsError:
            continue
        except OSError as exc:
            raise VaultError(f"creating {d}: {exc.strerror or exc}") from exc
        fsync_dir(d.parent)


def remove_stale_temps(directory: Path) -> int:
    """Delete temporary files a crash left in ``directory``; return how many."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in directory.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed += 1
    if removed:
        log.info("removed %d unfinished file(s) left by a crash in %s", removed, directory)
    return removed


def list_segments(camera_dir: Path) -> list[Path]:
    """Finished media segments of one camera, oldest first (temporary files never match)."""
    found: list[tuple[int, Path]] = []
    for path in camera_dir.glob("*/*/seg-*.m4s"):
        m = SEGMENT_RE.match(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def segment_relpath(start_wall_ns: int, number: int) -> Path:
    """Where segment number ``number`` starting at ``start_wall_ns`` lives under its camera."""
    start = dt.datetime.fromtimestamp(start_wall_ns / 1e9, tz=dt.UTC)
    return Path(start.strftime("%Y%m%d"), start.strftime("%H"), f"seg-{number:08d}.m4s")


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class _CameraSession:
    offset: int
    """File number of this session's segment 0."""
    init_sha256: str
    clean_dirs: set[Path]
    """Directories already swept of stale temporary files in this session."""


class DirectorySink(SegmentSink):
    """Writes each camera's segments as files under ``root`` (layout in the module docstring).

    Concurrency: one recording thread per camera calls :meth:`write`, possibly several cameras
    sharing one sink. ``_lock`` protects ``_sessions`` only; file writes of different cameras go
    to different directories and run outside it.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._sessions: dict[str, _CameraSession] = {}
        self.segments_written = 0

    def camera_dir(self, camera_id: str) -> Path:
        return self.root / camera_id

    def write(self, segment: MediaSegment) -> None:
        session = self._session_for(segment)
        cam_dir = self.camera_dir(segment.camera_id)
        number = session.offset + segment.sequence
        path = cam_dir / segment_relpath(segment.start_wall_ns, number)
        _make_dirs(path.parent)
        if path.parent not in session.clean_dirs:
            remove_stale_temps(path.parent)
            session.clean_dirs.add(path.parent)
        atomic_write(path, segment.media)
        sidecar = {
            "camera": segment.camera_id,
            "number": number,
            "sequence": segment.sequence,
            "start_wall_ns": segment.start_wall_ns,
            "end_wall_ns": segment.end_wall_ns,
            "start": _iso(segment.start_wall_ns),
            "end": _iso(segment.end_wall_ns),
            "duration_s": round(segment.duration_s, 6),
            "frame_count": segment.frame_count,
            "first_frame_index": segment.first_frame_index,
            "bytes": len(segment.media),
            "sha256": hashlib.sha256(segment.media).hexdigest(),
            "init": f"init-{session.init_sha256[:16]}.mp4",
        }
        atomic_write(path.with_suffix(".json"), json.dumps(sidecar, indent=1).encode() + b"\n")
        with self._lock:
            self.segments_written += 1

    def _session_for(self, segment: MediaSegment) -> _CameraSession:
        if not CAMERA_ID_RE.match(segment.camera_id):
            # The id becomes a directory name: never let one climb out of the root.
            raise VaultError(f"camera id {segment.camera_id!r} is not a safe directory name")
        with self._lock:
            session = self._sessions.get(segment.camera_id)
        init_sha = hashlib.sha256(segment.init).hexdigest()
        if session is not None:
            if session.init_sha256 != init_sha:
                raise VaultError(
                    f"{segment.camera_id}: segment {segment.sequence} has a different init "
                    "segment from the rest of its recording session"
                )
            return session
        cam_dir = self.camera_dir(segment.camera_id)
        _make_dirs(cam_dir)
        remove_stale_temps(cam_dir)
        existing = list_segments(cam_dir)
        offset = 0
        if existing:
            m = SEGMENT_RE.match(existing[-1].name)
            assert m is not None
            offset = int(m.group(1)) + 1
        offset -= segment.sequence  # a session may hand over its first segment late
        offset = max(offset, 0)
        named = cam_dir / f"init-{init_sha[:16]}.mp4"
        if not named.exists():
            atomic_write(named, segment.init)
        atomic_write(cam_dir / "init.mp4", segment.init)
        session = _CameraSession(offset=offset, init_sha256=init_sha, clean_dirs={cam_dir})
        with self._lock:
            self._sessions[segment.camera_id] = session
        log.info(
            "%s: recording to %s, first segment number %d",
            segment.camera_id,
            cam_dir,
            offset + segment.sequence,
        )
        return session

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()

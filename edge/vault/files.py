"""Durable file operations of the vault (crash-only: a crash leaves the old state or the new)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from ..fsutil import write_atomic

log = logging.getLogger(__name__)


def write_durably(tmp_dir: Path, final: Path, data: bytes) -> None:
    """Temporary file in ``tmp_dir`` (same file system), fsync, rename into place, fsync the
    directory. A crash before the rename leaves only a temporary file, removed at start-up."""
    write_atomic(final, data, mode=0o640, tmp_dir=tmp_dir, make_parents=True, exact_mode=False)


def unlink_pruning(path: Path) -> None:
    """Remove a file and its hour/day directories once empty, so ``ls`` shows what is kept."""
    path.unlink(missing_ok=True)
    for parent in (path.parent, path.parent.parent):
        try:
            parent.rmdir()
        except OSError:
            break


def quarantine(quarantine_dir: Path, path: Path, reason: str) -> None:
    """Move a file that failed verification aside (kept for analysis, never used)."""
    dest = quarantine_dir / f"{time.time_ns()}-{path.name}"
    log.error("%s: %s; moved to %s", path, reason, dest)
    try:
        shutil.move(str(path), dest)
    except OSError as exc:
        log.error("%s: cannot quarantine: %s", path, exc)

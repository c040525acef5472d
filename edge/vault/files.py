"""Durable file operations of the vault (crash-only: a crash leaves the old state or the new)."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

from ..unitkeys import fsync_dir

log = logging.getLogger(__name__)


def write_durably(tmp_dir: Path, final: Path, data: bytes) -> None:
    """Temporary file in ``tmp_dir`` (same file system), fsync, rename into place, fsync the
    directory. A crash before the rename leaves only a temporary file, removed at start-up."""
    tmp = tmp_dir / f"{final.name}.{threading.get_ident()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        makedirs_durably(final.parent)
        tmp.rename(final)
        fsync_dir(final.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def makedirs_durably(path: Path) -> None:
    """Create missing directories, each one made durable in its parent."""
    if path.is_dir():
        return
    makedirs_durably(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    fsync_dir(path.parent)


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

"""Durable queue of signed events waiting for the CSU (store-and-forward, like segments).

One file per event under ``<data_dir>/uplink/events/``, named ``<wall_ns>-<event id>.json``
so that a directory listing is the order of arrival; written atomically (temp file, fsync,
rename, fsync of the directory), removed once the CSU acknowledged it. An event the CSU
refuses for good moves to ``rejected/`` (kept for diagnosis, never resent). An acknowledged
event whose body names a snapshot moves to ``snapshots/`` instead (one rename), where it
waits until the vault's sealed snapshot of it reached the CSU: a restart resends it.

Thread-safety: producers (the analytics bridge) call :meth:`put`, the uplink thread calls
:meth:`pending`, :meth:`done` and :meth:`reject`; every change is a single rename or unlink, so
no lock is needed between them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from edge.uplink import event_checks as events

from ..fsutil import fsync_dir, write_atomic

_NAME = re.compile(r"^\d{19,20}-[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.json\Z")


class EventSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "rejected").mkdir(parents=True, exist_ok=True)
        self.snapshots = directory / "snapshots"
        self.snapshots.mkdir(exist_ok=True)

    def put(self, wire: bytes) -> Path:
        """Queue a signed wire event (``SignedEvent.wire()``); durable on return."""
        event = events.parse_event(wire)
        path = self.directory / f"{time.time_ns()}-{event['id']}.json"
        write_atomic(path, wire)
        return path

    def pending(self, limit: int = 100) -> list[Path]:
        names = sorted(p.name for p in self.directory.iterdir() if _NAME.match(p.name))
        return [self.directory / n for n in names[:limit]]

    def done(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        fsync_dir(self.directory)

    def reject(self, path: Path) -> None:
        path.replace(self.directory / "rejected" / path.name)
        fsync_dir(self.directory)

    def done_with_snapshot(self, path: Path, body: dict[str, Any]) -> None:
        """The CSU acknowledged the event at ``path``: gone, or, when its ``body`` names a
        snapshot, kept under ``snapshots/`` until that snapshot is delivered too."""
        if not isinstance(body.get("snapshot"), dict):
            self.done(path)
            return
        path.replace(self.snapshots / path.name)
        fsync_dir(self.snapshots)
        fsync_dir(self.directory)

    def snapshots_pending(self, limit: int = 100) -> list[Path]:
        """Acknowledged events whose snapshot is still to be sent, oldest first."""
        names = sorted(p.name for p in self.snapshots.iterdir() if _NAME.match(p.name))
        return [self.snapshots / n for n in names[:limit]]

    def snapshot_done(self, path: Path, *, refused: bool = False) -> None:
        """The snapshot of the event at ``path`` was delivered, or given up (``refused``:
        the event file is kept under ``rejected/`` for diagnosis)."""
        if refused:
            path.replace(self.directory / "rejected" / path.name)
        else:
            path.unlink(missing_ok=True)
        fsync_dir(self.snapshots)

    @staticmethod
    def queued_ns(path: Path) -> int:
        """When the event at ``path`` was queued (its name starts with that time)."""
        return int(path.name.split("-", 1)[0])

    def __len__(self) -> int:
        return len(self.pending(limit=1_000_000))

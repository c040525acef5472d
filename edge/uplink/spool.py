"""Durable queue of signed events waiting for the CSU (store-and-forward, like segments).

One file per event under ``<data_dir>/uplink/events/``, named ``<wall_ns>-<event id>.json``
so that a directory listing is the order of arrival; written atomically (temp file, fsync,
rename, fsync of the directory), removed once the CSU acknowledged it. An event the CSU
refuses for good moves to ``rejected/`` (kept for diagnosis, never resent).

Thread-safety: producers (the analytics bridge) call :meth:`put`, the uplink thread calls
:meth:`pending`, :meth:`done` and :meth:`reject`; every change is a single rename or unlink, so
no lock is needed between them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..unitkeys import fsync_dir, write_atomic
from . import events

_NAME = re.compile(r"^\d{19,20}-[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.json\Z")


class EventSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "rejected").mkdir(parents=True, exist_ok=True)

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

    def __len__(self) -> int:
        return len(self.pending(limit=1_000_000))

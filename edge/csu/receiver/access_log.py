"""The CSU audit log: every viewing and export, who, what, when (CSI L253-5: automatic log).

JSON Lines, append-only, each record fsync'd before the video it describes is served, and
hash-chained (``prev`` is the SHA-256 of the previous line) so a removed or edited line shows.
Thread-safe, and safe across processes: the receiver and ``edge-csu operator`` both append,
so each append takes an exclusive ``flock`` and reads the chain head from the file's last line
(a head cached in one process would break the chain after the other's append).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, who: str, action: str, **what: Any) -> dict[str, Any]:
        with self._lock:
            entry = {"time_ns": time.time_ns(), "who": who, "action": action, **what}
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
                entry["prev"] = _chain_head(fd)
                line = json.dumps(entry, sort_keys=True).encode()
                os.write(fd, line + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            return entry


def _chain_head(fd: int) -> str:
    """SHA-256 of the last line of the open log (all zeros when empty)."""
    size = os.fstat(fd).st_size
    chunk = 4096
    while True:
        start = max(0, size - chunk)
        tail = os.pread(fd, size - start, start)
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        if len(lines) == 2 or start == 0:
            last = lines[-1]
            return hashlib.sha256(last).hexdigest() if last else "0" * 64
        chunk *= 4


def read(path: Path) -> list[dict[str, Any]]:
    """Every record, after checking the hash chain (:class:`ValueError` names the first break)."""
    prev = "0" * 64
    out: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_bytes().splitlines(), start=1):
        entry = json.loads(line)
        if entry.get("prev") != prev:
            raise ValueError(f"{path}:{n}: audit chain broken (line removed or edited)")
        prev = hashlib.sha256(line).hexdigest()
        out.append(entry)
    return out

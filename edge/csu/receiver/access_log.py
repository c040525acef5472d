"""The CSU audit log: every viewing and export, who, what, when (CSI L253-5: automatic log).

JSON Lines, append-only, each record fsync'd before the video it describes is served, and
hash-chained (``prev`` is the SHA-256 of the previous line) so a removed or edited line shows.
Thread-safe: the lock serialises appends and protects the chain head.
"""

from __future__ import annotations

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
        self._prev = "0" * 64
        if path.exists():
            lines = path.read_bytes().splitlines()
            if lines:
                self._prev = hashlib.sha256(lines[-1]).hexdigest()

    def record(self, who: str, action: str, **what: Any) -> dict[str, Any]:
        with self._lock:
            entry = {"time_ns": time.time_ns(), "who": who, "action": action, **what}
            entry["prev"] = self._prev
            line = json.dumps(entry, sort_keys=True).encode()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            self._prev = hashlib.sha256(line).hexdigest()
            return entry


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

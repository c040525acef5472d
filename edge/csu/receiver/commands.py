"""Commands waiting for their unit: ``<commands_dir>/<unit>/<nonce>.json``, each the exact
signed bytes ``edge-csu command`` wrote (:mod:`edge.outputs.commands`).

The unit pulls them over its existing mutual-TLS connection (``GET …/commands``) and
acknowledges each once it has judged it (``DELETE …/commands/<nonce>``, accepted or refused:
the unit's audit log says which); the receiver then moves it to ``done/``. Nothing here
judges a command: the unit does, whoever queued it. An expired command is moved to ``done/``
without being offered.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

from edge.fsutil import write_new
from edge.outputs.commands import MAX_BYTES, nonce_of

from ...errors import CommandError

_NONCE_FILE = re.compile(r"^([0-9a-f]{32})\.json\Z")
#: Most commands offered in one answer: the unit polls again within a second.
_BATCH = 16


class CommandQueue:
    """Thread-safe by the file system: each command is one file, created once, renamed once."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, unit: str) -> Path:
        return self.root / unit

    def queue(self, unit: str, envelope: bytes) -> Path:
        """File a signed command for ``unit``; its nonce names it (a replay is refused here)."""
        nonce = nonce_of(envelope)
        if nonce is None or len(envelope) > MAX_BYTES:
            raise CommandError("not a signed command (no nonce, or too large)")
        path = self._dir(unit) / f"{nonce}.json"
        if path.exists() or (self._dir(unit) / "done" / path.name).exists():
            raise CommandError(f"a command with nonce {nonce} was already queued")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_new(path, envelope, mode=0o640)  # the receiver's group reads it
        return path

    def pending(self, unit: str, now_ns: int | None = None) -> list[tuple[str, bytes]]:
        now = time.time_ns() if now_ns is None else now_ns
        out: list[tuple[str, bytes]] = []
        try:
            names = sorted(os.listdir(self._dir(unit)))
        except FileNotFoundError:
            return out
        for name in names:
            m = _NONCE_FILE.match(name)
            if m is None:
                continue
            try:
                data = (self._dir(unit) / name).read_bytes()
            except FileNotFoundError:
                continue
            if _expired(data, now):
                self.done(unit, m.group(1))
                continue
            out.append((m.group(1), data))
            if len(out) >= _BATCH:
                break
        return out

    def done(self, unit: str, nonce: str) -> bool:
        """The unit judged the command: move it aside. False when there was none."""
        src = self._dir(unit) / f"{nonce}.json"
        dst = self._dir(unit) / "done" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            return False
        return True

    def is_done(self, unit: str, nonce: str) -> bool:
        return (self._dir(unit) / "done" / f"{nonce}.json").exists()


def _expired(data: bytes, now_ns: int) -> bool:
    # Unverified on purpose: only to spare the unit a command that can only be refused.
    try:
        body = json.loads(base64.b64decode(json.loads(data)["body"]))
        return int(body["expires_ns"]) <= now_ns
    except (ValueError, KeyError, TypeError):
        return False

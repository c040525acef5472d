"""Legal holds (``edge-csu hold``): recordings kept past the retention limit for proceedings.

``<retention dir>/holds.jsonl`` is a hash-chained log (:mod:`.access_log`'s format) of
``hold-add`` and ``hold-release`` entries: case number, who, when, what; the holds in force
are its fold (:func:`.retention.active_holds`). This log *is* the audit of holds: it is kept
apart from the receiver's viewing log because ``edge-csu hold`` runs beside a running receiver,
and one chained file must have one writer. A hold is never edited or deleted: it is released,
and the release is itself recorded. Writers and readers take ``holds.lock`` (flock), so two
agents placing holds at once, or a purge reading meanwhile, never see half an entry.
"""

from __future__ import annotations

import fcntl
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...errors import ConfigError, IntegrityError
from . import access_log
from .retention import Hold, active_holds

HOLDS_FILE = "holds.jsonl"


class HoldBook:
    def __init__(self, directory: Path, audit_key_file: Path | None = None) -> None:
        """``audit_key_file``: the CSU audit key that signs what this book appends (readers
        need none; without it, appends are unsigned)."""
        self.path = directory / HOLDS_FILE
        self._audit_key_file = audit_key_file
        self._lock_path = directory / "holds.lock"
        directory.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        with self._lock_path.open("a") as fh:
            fcntl.flock(fh, mode)
            yield

    def active(self) -> dict[str, Hold]:
        """The holds in force; :class:`IntegrityError` if the log's chain is broken (then
        nothing may be purged: a removed hold would let evidence be deleted)."""
        with self._locked(fcntl.LOCK_SH):
            return self._active()

    def _log(self) -> access_log.AuditLog:
        if self._audit_key_file is None:
            return access_log.AuditLog(self.path)
        return access_log.AuditLog.with_key_file(self.path, self._audit_key_file)

    def _active(self) -> dict[str, Hold]:
        return active_holds(self._read())

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        try:
            return access_log.read(self.path)
        except (ValueError, KeyError, TypeError) as exc:  # a broken chain, a torn line
            raise IntegrityError(f"hold log: {exc}; purges are stopped") from None

    def entries(self) -> list[dict[str, Any]]:
        """The whole log (placed and released holds), chain checked."""
        with self._locked(fcntl.LOCK_SH):
            return self._read()

    def add(
        self,
        *,
        case: str,
        unit: str,
        camera: str | None,
        from_ns: int,
        to_ns: int,
        who: str,
        reason: str = "",
    ) -> Hold:
        if to_ns < from_ns:
            raise ConfigError("the hold ends before it starts (--to before --from)")
        what = {
            "hold_id": "H-" + secrets.token_hex(6),
            "case": case,
            "unit": unit,
            "camera": camera,
            "from_ns": from_ns,
            "to_ns": to_ns,
            "reason": reason,
        }
        with self._locked(fcntl.LOCK_EX):
            self._active()  # refuses to append to a broken log
            entry = self._log().record(who, "hold-add", **what)
        return active_holds([entry])[str(what["hold_id"])]

    def release(self, hold_id: str, *, who: str, reason: str = "") -> Hold:
        with self._locked(fcntl.LOCK_EX):
            hold = self._active().get(hold_id)
            if hold is None:
                raise ConfigError(f"{hold_id}: no such hold in force (edge-csu hold list)")
            what = {"hold_id": hold_id, "case": hold.case, "unit": hold.unit, "reason": reason}
            self._log().record(who, "hold-release", **what)
        return hold

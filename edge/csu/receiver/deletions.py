"""Signed deletion records: what the CSU deleted, when, and under which limit.

``<retention dir>/deletions.jsonl``, one JSON line per camera and purge cycle::

    {"record": {"n", "prev", "deleted_ns", "unit", "camera", "retention_days", "sequences",
                "count", "oldest_ns", "newest_ns", "segments_sha256", "key_id",
                "released_hold": null | {"hold_id", "case", "released_ns"}},
     "signature": "<base64 Ed25519 over 'edge-deletion-v1\\0' + canonical JSON of record>"}

``prev`` is the SHA-256 of the previous line (zeros for the first), ``n`` counts from 0, so a
removed, reordered or edited line breaks the chain or a signature. ``oldest_ns`` is the earliest
age basis (:func:`.retention.age_basis_ns`) among the deleted segments: an auditor checks that
``deleted_ns`` is within the limit plus one purge interval of it, or, for segments a legal hold
kept (``released_hold``, one record per release), of the release. ``segments_sha256``
commits to the exact segments (``sequence:hash`` lines), so the record can be matched against
receipts the units hold.

A record is written (fsync'd) *before* the files it names are deleted: a crash in between
leaves a record for segments still present, which the next cycle deletes and records again;
it never leaves a deletion without a record. Dropping the *last* lines is the one edit the
chain alone cannot show: ``edge-csu retention audit`` prints the head (count and hash) for the
auditor to keep and compare next time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ...errors import IntegrityError
from .archive import StoredSegment
from .retention import age_basis_ns, ranges

ZERO = "0" * 64


def key_id(public: ed25519.Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


#: Domain separation: a deletion-record signature can never pass for another signed object.
_CONTEXT = b"edge-deletion-v1\0"


def _signed_bytes(record: dict[str, Any]) -> bytes:
    return _CONTEXT + json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def segments_digest(segments: list[StoredSegment]) -> str:
    text = "".join(f"{m.sequence}:{m.hash}\n" for m in sorted(segments, key=lambda m: m.sequence))
    return hashlib.sha256(text.encode()).hexdigest()


def _last_lines(path: Path, tail: int = 1 << 16) -> list[bytes]:
    """The file's last lines (only its end is read: the file grows by a line per camera and
    cycle, gigabytes over years, and the head is read at every cycle)."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            while True:
                start = max(0, size - tail)
                fh.seek(start)
                chunk = fh.read().rstrip(b"\n")
                if start == 0 or b"\n" in chunk:  # the last line is whole
                    return chunk.rsplit(b"\n", 1)[-1:] if chunk else []
                tail *= 4
    except FileNotFoundError:
        return []


@dataclass(frozen=True, slots=True)
class LedgerHead:
    count: int
    hash: str


class DeletionLedger:
    """Appends signed records. Thread-safe: the lock serialises appends and guards the head.
    One writer process at a time (the purge lock, :mod:`.purge`)."""

    def __init__(self, path: Path, key: ed25519.Ed25519PrivateKey) -> None:
        self.path = path
        self._key = key
        self._key_id = key_id(key.public_key())
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.reload()

    def reload(self) -> None:
        """Read the head from the file again (the purge does, under its lock: another process
        may have appended since this one started)."""
        path = self.path
        self._head = LedgerHead(0, ZERO)
        self._broken: str | None = None
        lines = _last_lines(path)
        if lines:
            try:
                n = int(json.loads(lines[-1])["record"]["n"])
            except (ValueError, KeyError, TypeError):
                # Never repaired silently: purges stop (logged each cycle) until someone looks.
                self._broken = f"{path}: the last deletion record is damaged; purges are stopped"
            else:
                self._head = LedgerHead(n + 1, hashlib.sha256(lines[-1]).hexdigest())

    @property
    def head(self) -> LedgerHead:
        """Count and hash of the last record (as of the last append or :meth:`reload`)."""
        return self._head

    @property
    def key_id(self) -> str:
        """The id of the key this ledger signs with."""
        return self._key_id

    def last_key_id(self) -> str | None:
        """The key id of the last record in the file (None: no readable record)."""
        lines = _last_lines(self.path)
        try:
            return str(json.loads(lines[-1])["record"]["key_id"]) if lines else None
        except (ValueError, KeyError, TypeError):
            return None

    def line_hash(self, n: int) -> str:
        """The hash of record ``n`` as the file holds it (:data:`ZERO` before the first);
        reads the whole file: for the rare check after an interrupted cycle."""
        if n < 0:
            return ZERO
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            lines = []
        return hashlib.sha256(lines[n]).hexdigest() if n < len(lines) else ""

    def record(
        self,
        unit: str,
        camera: str,
        segments: list[StoredSegment],
        *,
        deleted_ns: int,
        retention_days: int,
        released_hold: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        ages = [age_basis_ns(m) for m in segments]
        return self._append(
            {
                "kind": "segments",
                "unit": unit,
                "camera": camera,
                "sequences": ranges(m.sequence for m in segments),
                "count": len(segments),
                "oldest_ns": min(ages),
                "newest_ns": max(ages),
                "segments_sha256": segments_digest(segments),
            },
            deleted_ns=deleted_ns,
            retention_days=retention_days,
            released_hold=released_hold,
        )

    def record_events(
        self,
        unit: str,
        events: list[tuple[str, str, int]],
        *,
        deleted_ns: int,
        retention_days: int,
        released_hold: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A record of deleted events: ``(event id, SHA-256 of the stored document, age)``."""
        ages = [age for _, _, age in events]
        lines = "".join(f"{eid}:{digest}\n" for eid, digest, _ in sorted(events))
        return self._append(
            {
                "kind": "events",
                "unit": unit,
                "camera": None,
                "sequences": [],
                "count": len(events),
                "oldest_ns": min(ages),
                "newest_ns": max(ages),
                "segments_sha256": hashlib.sha256(lines.encode()).hexdigest(),
            },
            deleted_ns=deleted_ns,
            retention_days=retention_days,
            released_hold=released_hold,
        )

    def _append(
        self,
        what: dict[str, Any],
        *,
        deleted_ns: int,
        retention_days: int,
        released_hold: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if self._broken is not None:
            raise IntegrityError(self._broken)
        with self._lock:
            record = {
                "n": self._head.count,
                "prev": self._head.hash,
                "deleted_ns": deleted_ns,
                "retention_days": retention_days,
                **what,
                "key_id": self._key_id,
                "released_hold": released_hold,
            }
            signature = base64.b64encode(self._key.sign(_signed_bytes(record))).decode()
            line = json.dumps({"record": record, "signature": signature}, sort_keys=True).encode()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            self._head = LedgerHead(self._head.count + 1, hashlib.sha256(line).hexdigest())
            return record


def check_line(line: bytes, public: ed25519.Ed25519PublicKey, where: str) -> dict[str, Any]:
    """One line's record after checking its signature (not its place in the chain: an evidence
    bundle carries only the records that touch its range)."""
    try:
        outer = json.loads(line)
        record = outer["record"]
        signature = base64.b64decode(outer["signature"], validate=True)
        if not isinstance(record, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"{where}: not a deletion record") from None
    try:
        public.verify(signature, _signed_bytes(record))
    except InvalidSignature:
        raise IntegrityError(f"{where}: signature does not verify (forged or edited)") from None
    return record


def verify(path: Path, public: ed25519.Ed25519PublicKey) -> tuple[list[dict[str, Any]], LedgerHead]:
    """Every record after checking signatures, numbering and chain; :class:`IntegrityError`
    names the first line that fails (removed, edited, forged or signed by another key)."""
    prev, records = ZERO, []
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return [], LedgerHead(0, ZERO)
    for n, line in enumerate(lines):
        where = f"{path}:{n + 1}"
        record = check_line(line, public, where)
        if record.get("prev") != prev or record.get("n") != n:
            raise IntegrityError(f"{where}: chain broken (a record was removed or reordered)")
        prev = hashlib.sha256(line).hexdigest()
        records.append(record)
    return records, LedgerHead(len(records), prev)

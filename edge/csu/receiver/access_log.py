"""The CSU audit log: every viewing and export, who, what, when (CSI L253-5: automatic log).

JSON Lines, append-only, each record fsync'd before the video it describes is served, and
hash-chained (``prev`` is the SHA-256 of the previous line) so a removed or edited line shows.
Each record is signed (``sig``: Ed25519 over ``edge-csu-audit-v1\\0`` + the canonical JSON of
the record without ``sig``, ``prev`` included; ``key_id`` names the audit key), so a forger
who rewrites the whole chain still needs the CSU's audit key. A record without ``sig`` is
unsigned (an older log, or a process that could not read the key: it said so when it wrote).
Thread-safe, and safe across processes: the receiver, ``edge-csu operator`` and ``edge-csu
hold`` append, so each append takes an exclusive ``flock`` and reads the chain head from the
file's last line (a head cached in one process would break the chain after the other's append).

A power cut mid-append leaves a torn last line (no ending newline). It is never repaired in
place: the next append ends it with a newline and first writes a signed ``audit-torn-line``
record naming its byte offset and SHA-256 (its ``prev`` is the torn line's hash), so the
chain goes on through it and :func:`verify` reports it as torn, not as forged.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from ...errors import ConfigError, KeyExistsError
from . import receipts
from .deletions import key_id

ZERO = "0" * 64
TORN_ACTION = "audit-torn-line"
#: Domain separation: an audit signature can never pass for another signed object.
_CONTEXT = b"edge-csu-audit-v1\0"


def signed_bytes(entry: dict[str, Any]) -> bytes:
    body = {k: v for k, v in entry.items() if k != "sig"}
    return _CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def open_signing_key(key_file: Path) -> tuple[ed25519.Ed25519PrivateKey | None, str]:
    """The audit key (created with its public half if missing), or ``None`` and why not: a
    process that cannot read it still audits, unsigned, rather than lose the record."""
    try:
        try:
            return receipts.load_or_create(key_file, "audit key"), ""
        except KeyExistsError:  # another process made it just now: use theirs
            return receipts.load_or_create(key_file, "audit key"), ""
    except OSError as exc:  # no right to create it here
        return None, f"{key_file}: cannot create the audit key ({exc.strerror})"
    except ConfigError as exc:  # exists, unreadable or damaged
        return None, str(exc)


class AuditLog:
    """Appends records, signed with ``key`` when given (``None``: unsigned, ``unsigned_reason``
    printed once on stderr so whoever runs the command knows)."""

    def __init__(
        self,
        path: Path,
        key: ed25519.Ed25519PrivateKey | None = None,
        *,
        unsigned_reason: str = "",
        clock: Callable[[], int] = time.time_ns,
        stamp: dict[str, str] | None = None,
    ) -> None:
        """``stamp``: fields written into every record (cluster mode: ``receiver``, the
        receiver that served the view; each receiver keeps its own log)."""
        self.path = path
        self._stamp = dict(stamp or {})
        self._key = key
        self._key_id = key_id(key.public_key()) if key is not None else ""
        self._unsigned_reason = unsigned_reason
        self._clock = clock
        # Guards the append below within this process; flock guards it across processes.
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def public_key(self) -> ed25519.Ed25519PublicKey | None:
        return None if self._key is None else self._key.public_key()

    @classmethod
    def with_key_file(
        cls, path: Path, key_file: Path, *, stamp: dict[str, str] | None = None
    ) -> AuditLog:
        """For the commands other than the receiver (which refuses to start without its key):
        they sign when they can read the key and otherwise write unsigned, saying why."""
        key, reason = open_signing_key(key_file)
        return cls(path, key, unsigned_reason=reason, stamp=stamp)

    def _line(self, entry: dict[str, Any]) -> bytes:
        if self._key is not None:
            entry["key_id"] = self._key_id
            entry["sig"] = base64.b64encode(self._key.sign(signed_bytes(entry))).decode()
        return json.dumps(entry, sort_keys=True).encode() + b"\n"

    def record(self, who: str, action: str, **what: Any) -> dict[str, Any]:
        with self._lock:
            if self._key is None and self._unsigned_reason:
                print(f"audit: {self._unsigned_reason}: records are written unsigned",
                      file=sys.stderr)  # fmt: skip
                self._unsigned_reason = ""
            entry = {"time_ns": self._clock(), "who": who, "action": action, **self._stamp, **what}
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
                torn = _torn_tail(fd)
                if torn is not None:
                    offset, data = torn
                    digest = hashlib.sha256(data).hexdigest()
                    note = {
                        "time_ns": entry["time_ns"], "who": "edge-csu", "action": TORN_ACTION,
                        "offset": offset, "length": len(data), "sha256": digest, "prev": digest,
                    }  # fmt: skip
                    os.write(fd, b"\n" + self._line(note))
                entry["prev"] = _chain_head(fd)
                os.write(fd, self._line(entry))
                os.fsync(fd)
            finally:
                os.close(fd)
            return entry


def _torn_tail(fd: int) -> tuple[int, bytes] | None:
    """(byte offset, bytes) of the last line when the file does not end with a newline."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return None
    chunk = 4096
    while True:
        start = max(0, size - chunk)
        tail = os.pread(fd, size - start, start)
        cut = tail.rfind(b"\n")
        if cut >= 0 or start == 0:
            return start + cut + 1, tail[cut + 1 :]
        chunk *= 4


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
            return hashlib.sha256(last).hexdigest() if last else ZERO
        chunk *= 4


@dataclass
class AuditReport:
    """What :func:`verify` found. ``problem`` names the first forgery or break (line number);
    torn lines and unsigned records are reported, not counted as forgery."""

    count: int = 0
    head: str = ZERO
    signed: int = 0
    unsigned_lines: list[int] = field(default_factory=list)
    torn: list[tuple[int, int]] = field(default_factory=list)  # (line number, byte offset)
    torn_pending: bool = False  # the last line is torn and no append has recorded it yet
    problem: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    signed_lines: set[int] = field(default_factory=set)

    @property
    def unsigned_after_signed(self) -> list[int]:
        """Unsigned records after the first signed one: a command without the key wrote them,
        or anyone did (the chain alone can be extended by anyone who can write the file)."""
        first = min(self.signed_lines, default=None)
        return [] if first is None else [n for n in self.unsigned_lines if n > first]


def verify(path: Path, public: ed25519.Ed25519PublicKey | None) -> AuditReport:
    """Checks the chain and, with ``public``, every signature; stops at the first problem."""
    report = AuditReport()
    data = path.read_bytes()
    prev = ZERO
    pending: tuple[int, int, bytes] | None = None  # a line that is no record: torn or forged
    last: tuple[int, bytes] | None = None  # (offset, bytes) of the previous line
    offset = 0
    want_id = key_id(public) if public is not None else None
    for n, raw in enumerate(data.split(b"\n"), start=1):
        here, offset = offset, offset + len(raw) + 1
        if not raw and offset > len(data):
            break  # after the final newline
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except ValueError:
            if pending is not None:
                report.problem = f"line {pending[0]}: not an audit record (damaged or forged)"
                return report
            pending = (n, here, raw)
            prev, last = hashlib.sha256(raw).hexdigest(), (here, raw)
            if offset > len(data):  # the last line, torn, not yet recorded as such
                report.torn.append((n, here))
                report.torn_pending = True
            continue
        if entry.get("prev") != prev:
            report.problem = f"line {n}: audit chain broken (line removed or edited)"
            return report
        if "sig" in entry:
            try:
                sig = base64.b64decode(entry["sig"], validate=True)
                if public is not None:
                    if entry.get("key_id") != want_id:
                        raise InvalidSignature
                    public.verify(sig, signed_bytes(entry))
            except (InvalidSignature, binascii.Error, TypeError):
                report.problem = (
                    f"line {n}: bad signature (record edited, or signed by another key)"
                )
                return report
            report.signed += 1
            report.signed_lines.add(n)
        else:
            report.unsigned_lines.append(n)
        if entry.get("action") == TORN_ACTION:
            named = last is not None and (
                entry.get("offset") == last[0]
                and entry.get("sha256") == hashlib.sha256(last[1]).hexdigest()
            )
            if not named or "sig" not in entry:
                report.problem = f"line {n}: {TORN_ACTION} record names no torn line before it"
                return report
            if pending is not None:
                report.torn.append((pending[0], pending[1]))
            pending = None
        elif pending is not None:
            report.problem = f"line {pending[0]}: not an audit record (damaged or forged)"
            return report
        report.records.append(entry)
        report.count += 1
        prev, last = hashlib.sha256(raw).hexdigest(), (here, raw)
    report.head = prev
    return report


def read(path: Path) -> list[dict[str, Any]]:
    """Every record, after checking the hash chain (:class:`ValueError` names the first break);
    torn lines are left out, a record without ``sig`` is unsigned."""
    report = verify(path, None)
    if report.problem is not None:
        raise ValueError(f"{path}:{report.problem.removeprefix('line ')}")
    return report.records

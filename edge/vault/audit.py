"""The audit log: append-only, hash-chained, each record signed by the unit.

One JSON object a line::

    {"v": 1, "seq": 12, "time_ns": ..., "device": "unit-7", "actor": "root",
     "action": "export", "details": {...}, "prev": "<hex SHA-256 of the previous line>",
     "sig": "<base64 Ed25519>"}

``sig`` signs ``b"edge-audit-v1\\0" || SHA-256(the line without its "sig" member, in canonical
JSON: sorted keys, no spaces)``. Records say what was done and how much (counts, ranges, case
references, digests), never content. Several processes append (edged purges, ``edgectl
export``): each append takes an exclusive ``flock`` on the file, reads the tail, appends one
line and fsyncs. A crash mid-append leaves a partial last line, which the next writer removes
(it was never acknowledged to anyone).
"""

from __future__ import annotations

import base64
import fcntl
import getpass
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import IntegrityError, VaultError

_DOMAIN = b"edge-audit-v1\0"
GENESIS = "0" * 64


def current_actor() -> str:
    """The unix user acting (``SUDO_USER`` too when run through sudo)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{user} (via sudo from {sudo})" if sudo and sudo != user else user


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _signed_message(record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "sig"}
    return _DOMAIN + hashlib.sha256(_canonical(body)).digest()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    time_ns: int
    device: str
    actor: str
    action: str
    details: dict[str, Any]
    prev: str
    """Hash of the previous line (the chain)."""
    line_hash: str


class AuditLog:
    def __init__(
        self, path: Path, device_id: str, signing_key: ed25519.Ed25519PrivateKey | None = None
    ) -> None:
        self.path = path
        self.device_id = device_id
        self._key = signing_key

    def append(
        self,
        action: str,
        details: dict[str, Any],
        *,
        actor: str | None = None,
        now_ns: int | None = None,
    ) -> AuditRecord:
        if self._key is None:
            raise VaultError("audit log opened read-only")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.geteuid() == 0 and os.fstat(fd).st_size == 0:
                # Created by root (edgectl before edged ever ran): hand it to the owner of the
                # vault, or edged (User=edge) could not append to it later.
                parent = self.path.parent.stat()
                os.fchown(fd, parent.st_uid, parent.st_gid)
            prev, seq = self._tail(fd)
            record: dict[str, Any] = {
                "v": 1,
                "seq": seq,
                "time_ns": now_ns if now_ns is not None else time.time_ns(),
                "device": self.device_id,
                "actor": actor if actor is not None else current_actor(),
                "action": action,
                "details": details,
                "prev": prev,
            }
            record["sig"] = base64.b64encode(self._key.sign(_signed_message(record))).decode()
            line = _canonical(record)
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)  # also releases the lock
        return AuditRecord(
            seq,
            record["time_ns"],
            self.device_id,
            record["actor"],
            action,
            details,
            prev,
            hashlib.sha256(line).hexdigest(),
        )

    def _tail(self, fd: int) -> tuple[str, int]:
        """(hash of the last complete line, next seq); drops a torn final line."""
        size = os.fstat(fd).st_size
        if size == 0:
            return GENESIS, 0
        chunk = min(size, 65536)
        data = os.pread(fd, chunk, size - chunk)
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n")
            new_size = size - chunk + cut + 1 if cut >= 0 else (0 if chunk == size else None)
            if new_size is None:
                raise VaultError(f"{self.path}: last audit record longer than 64 KiB")
            os.ftruncate(fd, new_size)
            os.fsync(fd)
            return self._tail(fd)
        lines = data[:-1].split(b"\n")
        last = lines[-1]
        try:
            seq = int(json.loads(last)["seq"]) + 1
        except (ValueError, KeyError, TypeError):
            raise VaultError(
                f"{self.path}: last audit record unreadable; run edgectl audit"
            ) from None
        return hashlib.sha256(last).hexdigest(), seq


def read_audit(
    path: Path, public_key: ed25519.Ed25519PublicKey
) -> tuple[list[AuditRecord], list[str]]:
    """Every record, and the problems found (bad signature, broken chain, torn line)."""
    records: list[AuditRecord] = []
    problems: list[str] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise VaultError(f"{path}: {exc.strerror}") from None
    prev = GENESIS
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        problems.append(f"line {len(lines)}: torn record (no end of line)")
    for n, line in enumerate(lines, start=1):
        try:
            rec = parse_record(line, public_key)
        except IntegrityError as exc:
            problems.append(f"line {n}: {exc}")
            prev = hashlib.sha256(line).hexdigest()
            continue
        if rec.prev != prev:
            problems.append(f"line {n}: chain broken (a record was removed or reordered)")
        prev = rec.line_hash
        records.append(rec)
    return records, problems


def parse_record(line: bytes, public_key: ed25519.Ed25519PublicKey) -> AuditRecord:
    """One audit line, authenticated; :class:`IntegrityError` if malformed or altered."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError("not JSON") from None
    if not isinstance(record, dict):
        raise IntegrityError("not a record")
    try:
        sig = base64.b64decode(str(record["sig"]), validate=True)
        public_key.verify(sig, _signed_message(record))
        details = record["details"]
        if not isinstance(details, dict):
            raise TypeError("details")
        rec = AuditRecord(
            seq=int(record["seq"]),
            time_ns=int(record["time_ns"]),
            device=str(record["device"]),
            actor=str(record["actor"]),
            action=str(record["action"]),
            details=details,
            prev=str(record["prev"]),
            line_hash=hashlib.sha256(line).hexdigest(),
        )
    except InvalidSignature:
        raise IntegrityError("bad signature (altered)") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"malformed record ({exc})") from None
    return rec

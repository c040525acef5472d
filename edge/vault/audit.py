"""The audit log: append-only, hash-chained, each record signed by the unit.

One JSON object a line::

    {"v": 1, "seq": 12, "time_ns": ..., "device": "unit-7", "actor": "root",
     "action": "export", "details": {...}, "prev": "<hex SHA-256 of the previous line>",
     "sig": "<base64 Ed25519>"}

``sig`` signs ``b"edge-audit-v1\\0" || SHA-256(the line without its "sig" member, in canonical
JSON: sorted keys, no spaces)``. Records say what was done and how much (counts, ranges, case
references, digests), never content. Several processes append (edged purges, ``edgectl
export``): each append takes an exclusive ``flock`` on the file, reads the tail, appends one
line, fsyncs, then moves the *head anchor* forward.

The head anchor (``audit.head``, beside the log) is a small signed file naming the last record
(sequence and line hash), replaced atomically after each append. The log only grows at its end,
so cutting its tail leaves the anchor ahead of it: :func:`check_audit` sees that. It cannot see
the log and its anchor rolled back together (a whole-vault copy restored, or someone holding the
unit's signing key rewriting both): only a copy held outside the unit can.

Evidence is never silently repaired. A damaged tail found by the next append (a torn line left
by a power cut, garbage, a record whose signature fails, or a log shorter than its anchor) is
copied to ``quarantine/`` first, cut off, and an ``audit-damage`` record naming what was lost
(bytes, SHA-256, quarantine file, missing sequences) is appended and signed before the record
that was asked for. Sequence numbers are never reused: the next one continues after the anchor.
"""

from __future__ import annotations

import base64
import fcntl
import getpass
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import IntegrityError, VaultError
from ..fsutil import write_atomic

_DOMAIN = b"edge-audit-v1\0"
_HEAD_DOMAIN = b"edge-audit-head-v1\0"
GENESIS = "0" * 64
DAMAGE_ACTION = "audit-damage"
"""A damaged tail was found, quarantined and cut off by an append (details say what)."""
_CHUNK = 65536


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


def _signed_message(record: dict[str, Any], domain: bytes = _DOMAIN) -> bytes:
    body = {k: v for k, v in record.items() if k != "sig"}
    return domain + hashlib.sha256(_canonical(body)).digest()


def head_path(log_path: Path) -> Path:
    """The head anchor of the log at ``log_path`` (``audit.log`` → ``audit.head``)."""
    return log_path.with_suffix(".head")


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


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The signed anchor: the last record appended, as its writer saw it."""

    seq: int
    line_hash: str


@dataclass(frozen=True, slots=True)
class _Tail:
    prev: str
    seq: int
    cut_at: int | None = None
    """Where the damaged tail starts (bytes from there on are quarantined and cut off)."""
    damage: dict[str, Any] | None = None


@dataclass
class AuditCheck:
    """What :func:`check_audit` found: the records, problems, and damage already recorded."""

    records: list[AuditRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    incidents: list[AuditRecord] = field(default_factory=list)
    """Signed ``audit-damage`` records: damage found, preserved and recorded earlier."""
    head: AuditHead | None = None

    @property
    def last_seq(self) -> int | None:
        return self.records[-1].seq if self.records else None


def _make_dirs(folder: Path) -> None:
    """``folder`` and its missing parents (0700). Made by root (edgectl, or the update
    confirmation service, before edged ever wrote there), each is handed to the owner of the
    directory above it, the data directory's: edged (User=edge) must create files there later."""
    missing: list[Path] = []
    above = folder
    while not above.exists():
        missing.append(above)
        above = above.parent
    if not missing:
        return
    owner = above.stat()
    for made in reversed(missing):
        made.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(made, owner.st_uid, owner.st_gid)


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
        key = self._key
        _make_dirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.geteuid() == 0 and os.fstat(fd).st_size == 0:
                # Created by root (edgectl before edged ever ran): hand it to the owner of the
                # vault, or edged (User=edge) could not append to it later.
                parent = self.path.parent.stat()
                os.fchown(fd, parent.st_uid, parent.st_gid)
            now = now_ns if now_ns is not None else time.time_ns()
            who = actor if actor is not None else current_actor()
            tail = self._tail(fd, key.public_key())
            prev, seq = tail.prev, tail.seq
            if tail.damage is not None:
                damage = dict(tail.damage)
                if tail.cut_at is not None:
                    damage.update(self._quarantine_tail(fd, tail.cut_at, now))
                rec = self._write(fd, key, seq, now, who, DAMAGE_ACTION, damage, prev)
                prev, seq = rec.line_hash, seq + 1
            record = self._write(fd, key, seq, now, who, action, details, prev)
            self._write_head(key, record)
        finally:
            os.close(fd)  # also releases the lock
        return record

    def _write(
        self,
        fd: int,
        key: ed25519.Ed25519PrivateKey,
        seq: int,
        now: int,
        actor: str,
        action: str,
        details: dict[str, Any],
        prev: str,
    ) -> AuditRecord:
        record: dict[str, Any] = {
            "v": 1,
            "seq": seq,
            "time_ns": now,
            "device": self.device_id,
            "actor": actor,
            "action": action,
            "details": details,
            "prev": prev,
        }
        record["sig"] = base64.b64encode(key.sign(_signed_message(record))).decode()
        line = _canonical(record)
        os.write(fd, line + b"\n")
        os.fsync(fd)
        return AuditRecord(
            seq, now, self.device_id, actor, action, details, prev, hashlib.sha256(line).hexdigest()
        )

    def _write_head(self, key: ed25519.Ed25519PrivateKey, record: AuditRecord) -> None:
        # After the line is durable: a crash in between leaves the anchor one record behind,
        # which hides nothing (the log is longer, not shorter, than what the anchor names).
        head: dict[str, Any] = {
            "v": 1,
            "device": self.device_id,
            "seq": record.seq,
            "line_sha256": record.line_hash,
        }
        head["sig"] = base64.b64encode(key.sign(_signed_message(head, _HEAD_DOMAIN))).decode()
        path = head_path(self.path)
        write_atomic(path, _canonical(head) + b"\n", mode=0o640)
        parent = self.path.parent.stat()
        if os.geteuid() == 0 and path.stat().st_uid != parent.st_uid:
            os.chown(path, parent.st_uid, parent.st_gid)

    def _quarantine_tail(self, fd: int, cut_at: int, now: int) -> dict[str, Any]:
        """Copy the damaged bytes aside (durably) before cutting them off the log."""
        size = os.fstat(fd).st_size
        data = os.pread(fd, size - cut_at, cut_at)
        qdir = self.path.parent / "quarantine"
        qdir.mkdir(parents=True, exist_ok=True)
        dest = qdir / f"{now}-{self.path.name}.tail"
        write_atomic(dest, data, mode=0o640)
        os.ftruncate(fd, cut_at)
        os.fsync(fd)
        return {
            "quarantined": str(dest),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "at_offset": cut_at,
        }

    def _tail(self, fd: int, public_key: ed25519.Ed25519PublicKey) -> _Tail:
        """The last record that verifies, the next sequence, and any damage after it."""
        size = os.fstat(fd).st_size
        last: AuditRecord | None = None
        reasons: list[str] = []
        bad_lines = 0
        end = size  # the log is examined backwards; [end, size) is damaged
        if size and os.pread(fd, 1, size - 1) != b"\n":
            end = _line_start(fd, size)
            reasons.append("torn last record (no end of line: a write cut short)")
        while end > 0:
            start = _line_start(fd, end - 1)
            try:
                last = parse_record(os.pread(fd, end - 1 - start, start), public_key)
                break
            except IntegrityError as exc:
                bad_lines += 1
                reasons.append(f"complete record at byte {start} unusable: {exc}")
                end = start
        good_end = end
        damage: dict[str, Any] = {}
        if good_end != size:
            damage["reasons"] = reasons
            damage["bad_lines"] = bad_lines
        seq = last.seq + 1 if last is not None else 0
        prev = last.line_hash if last is not None else GENESIS
        try:
            head = read_head(head_path(self.path), public_key)
        except IntegrityError as exc:
            damage.setdefault("reasons", []).append(f"head anchor unusable: {exc}")
            head = None
        if head is None and last is not None and not head_path(self.path).exists():
            damage.setdefault("reasons", []).append(
                "no head anchor (first append since an upgrade, or the anchor was deleted)"
            )
        if head is not None:
            if head.seq >= seq:
                damage.setdefault("reasons", []).append(
                    f"log ends before its head anchor (#{head.seq}): tail cut or lost"
                )
                damage["missing_seqs"] = [seq, head.seq]
                seq = head.seq + 1
            elif last is not None and head.seq == last.seq and head.line_hash != last.line_hash:
                damage.setdefault("reasons", []).append(
                    f"record #{head.seq} differs from the one its head anchor names (rewritten)"
                )
        if not damage:
            return _Tail(prev, seq)
        damage["last_good_seq"] = last.seq if last is not None else None
        return _Tail(prev, seq, good_end if good_end != size else None, damage)


def _line_start(fd: int, pos: int) -> int:
    """Offset of the start of the line holding byte ``pos - 1`` (after the previous newline)."""
    while pos > 0:
        step = min(_CHUNK, pos)
        cut = os.pread(fd, step, pos - step).rfind(b"\n")
        if cut >= 0:
            return pos - step + cut + 1
        pos -= step
    return 0


def read_head(path: Path, public_key: ed25519.Ed25519PublicKey) -> AuditHead | None:
    """The head anchor, authenticated; None if there is none; :class:`IntegrityError` if bad."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IntegrityError(f"{path.name}: unreadable: {exc.strerror}") from None
    try:
        head = json.loads(data)
        if not isinstance(head, dict):
            raise TypeError("not an object")
        sig = base64.b64decode(str(head["sig"]), validate=True)
        public_key.verify(sig, _signed_message(head, _HEAD_DOMAIN))
        return AuditHead(int(head["seq"]), str(head["line_sha256"]))
    except InvalidSignature:
        raise IntegrityError(f"{path.name}: bad signature (altered)") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path.name}: malformed ({exc})") from None


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
    expected = 0
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
            expected += 1
            continue
        if rec.prev != prev:
            problems.append(f"line {n}: chain broken (a record was removed or reordered)")
        # Only a damage record may skip sequences: it names the ones lost with the tail.
        if rec.seq != expected and not (rec.action == DAMAGE_ACTION and rec.seq > expected):
            problems.append(f"line {n}: sequence #{rec.seq} where #{expected} was expected")
        prev = rec.line_hash
        expected = rec.seq + 1
        records.append(rec)
    return records, problems


def check_audit(path: Path, public_key: ed25519.Ed25519PublicKey) -> AuditCheck:
    """The whole log checked (signatures, chain, sequences) and cross-checked with its anchor.

    Sees: an altered, removed, reordered or inserted record; a torn or garbage line; a tail cut
    off (the anchor names a later record); a last record replaced; a quarantined tail that is
    gone. Cannot see: the log and its anchor rolled back together to an earlier consistent state
    (an old copy of the vault restored, or a rewrite by someone holding the unit's signing key).
    """
    check = AuditCheck()
    check.records, check.problems = read_audit(path, public_key)
    check.incidents = [r for r in check.records if r.action == DAMAGE_ACTION]
    try:
        check.head = read_head(head_path(path), public_key)
    except IntegrityError as exc:
        check.problems.append(f"head anchor: {exc}")
        return check
    last = check.records[-1] if check.records else None
    if check.head is None:
        if last is not None:
            check.problems.append(
                f"no head anchor ({head_path(path).name}): a cut tail would go unseen"
            )
    elif last is None or check.head.seq > last.seq:
        first = last.seq + 1 if last is not None else 0
        check.problems.append(
            f"records #{first}..#{check.head.seq} missing: the log ends before its head anchor "
            "(tail deleted, truncated or an older copy restored)"
        )
    else:
        named = next((r for r in check.records if r.seq == check.head.seq), None)
        if named is None or named.line_hash != check.head.line_hash:
            check.problems.append(
                f"record #{check.head.seq} differs from the one its head anchor names (rewritten)"
            )
    for rec in check.incidents:
        _check_quarantined(path.parent, rec, check.problems)
    return check


def _check_quarantined(root: Path, rec: AuditRecord, problems: list[str]) -> None:
    name, digest = rec.details.get("quarantined"), rec.details.get("sha256")
    if not isinstance(name, str) or not isinstance(digest, str):
        return
    kept = root / "quarantine" / Path(name).name
    try:
        ok = hashlib.sha256(kept.read_bytes()).hexdigest() == digest
    except OSError:
        ok = False
    if not ok:
        problems.append(f"record #{rec.seq}: the quarantined audit tail {kept} is gone or altered")


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

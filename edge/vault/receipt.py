"""CSU receipts: the CSU's signed statement that it held a unit's chain up to a segment, and when.

The receiver answers every accepted segment with a receipt (docs/FORMATS.md, *CSU receipt*):
the unit, camera and sequence, the segment's chain hash (SHA-256 of its exact bytes, which
commits through ``prev_hash`` to every earlier segment of the camera) and the CSU's clock,
signed with the CSU's receipt key (Ed25519). The unit checks it and keeps it in the vault
(``receipts/<camera>/<YYYY-MM-DD>.rcl``, by the segment's start day); exports carry the receipts
of their segments; the verifier checks them against the receipt key it trusts.

What a receipt proves: that the CSU held exactly this segment, hence this chain up to it, no
later than ``csu_time_ns`` by the CSU's clock. A past the CSU has receipted can no longer be
rewritten, even with the unit's key, without the rewrite showing, and a recording is known to
have existed by a time the unit's clock does not set. What it does not prove: that the recording
was made when its own header says (only that it was not made after the receipt), anything about
segments after the last receipt, or that the CSU's clock was right.

Receipt logs are append-only: each record is a 2-byte big-endian length then the receipt. A torn
last record (power cut) is ignored by readers. The next append does not repair it in silence: the
torn bytes are copied to the vault's ``quarantine/`` first (``<time>-<camera>-<day>.rcl.tail``),
a warning names them, and only then are they cut off and the new record written after the
intact ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import IntegrityError, VaultError
from ..fsutil import fsync_dir, write_atomic
from . import format as fmt

log = logging.getLogger(__name__)

RECEIPT_MAGIC = b"ERCT"
_DOMAIN = b"edge-receipt-v1\0"
# magic, version, flags, csu_time_ns, sequence, chain_hash, csu key id
_FIXED = struct.Struct(">4sBBqQ32s16s")
_LEN = struct.Struct(">H")
KEY_ID_LEN = 16


def receipt_key_id(key: ed25519.Ed25519PublicKey) -> bytes:
    """First 16 bytes of SHA-256 over the raw public key: names the CSU key that signed."""
    return fmt.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw))[:KEY_ID_LEN]


@dataclass(frozen=True, slots=True)
class Receipt:
    device_id: str
    camera_id: str
    sequence: int
    chain_hash: bytes
    """SHA-256 of the complete sealed segment the CSU holds under that sequence."""
    csu_time_ns: int
    """The CSU's clock when it answered (ns since 1970 UTC)."""
    key_id: bytes
    raw: bytes = b""

    def body(self) -> bytes:
        return _FIXED.pack(
            RECEIPT_MAGIC,
            fmt.VERSION,
            0,
            self.csu_time_ns,
            self.sequence,
            self.chain_hash,
            self.key_id,
        ) + (fmt._pack_id(self.device_id) + fmt._pack_id(self.camera_id))


def sign_receipt(
    key: ed25519.Ed25519PrivateKey,
    *,
    device_id: str,
    camera_id: str,
    sequence: int,
    chain_hash: bytes,
    csu_time_ns: int,
) -> bytes:
    receipt = Receipt(
        device_id, camera_id, sequence, chain_hash, csu_time_ns, receipt_key_id(key.public_key())
    )
    body = receipt.body()
    return body + key.sign(_DOMAIN + fmt.sha256(body))


def parse_receipt(raw: bytes) -> Receipt:
    _flags, time_ns, sequence, chain_hash, key_id = fmt._signed_fields(
        raw, _FIXED, RECEIPT_MAGIC, "receipt"
    )
    body = raw[: -fmt.SIG_LEN]
    device_id, pos = fmt._unpack_id(body, _FIXED.size, "device id")
    camera_id, pos = fmt._unpack_id(body, pos, "camera id")
    if pos != len(body):
        raise IntegrityError("trailing bytes in receipt")
    return Receipt(device_id, camera_id, sequence, bytes(chain_hash), time_ns, bytes(key_id), raw)


def verify_receipt(
    raw: bytes,
    csu_key: ed25519.Ed25519PublicKey,
    *,
    device_id: str,
    camera_id: str | None = None,
    sequence: int | None = None,
    chain_hash: bytes | None = None,
) -> Receipt:
    """A receipt signed by ``csu_key`` for this unit (and camera, sequence, segment when given);
    :class:`IntegrityError` says which check failed."""
    receipt = parse_receipt(raw)
    what = f"receipt {receipt.camera_id}#{receipt.sequence}"
    if receipt.key_id != receipt_key_id(csu_key):
        raise IntegrityError(f"{what}: signed by another key than the CSU's receipt key")
    try:
        csu_key.verify(raw[-fmt.SIG_LEN :], _DOMAIN + fmt.sha256(raw[: -fmt.SIG_LEN]))
    except InvalidSignature:
        raise IntegrityError(f"{what}: bad signature (forged or altered)") from None
    if receipt.device_id != device_id:
        raise IntegrityError(f"{what}: issued to unit {receipt.device_id!r}, not {device_id!r}")
    if camera_id is not None and receipt.camera_id != camera_id:
        raise IntegrityError(f"{what}: for camera {receipt.camera_id!r}, not {camera_id!r}")
    if sequence is not None and receipt.sequence != sequence:
        raise IntegrityError(f"{what}: for another sequence than #{sequence}")
    if chain_hash is not None and receipt.chain_hash != chain_hash:
        raise IntegrityError(
            f"{what}: the CSU receipted other bytes under this sequence (the chain was "
            "rewritten after the receipt)"
        )
    return receipt


# --- receipt logs --------------------------------------------------------------------------------


def frame_record(raw: bytes) -> bytes:
    return _LEN.pack(len(raw)) + raw


def split_records(data: bytes) -> list[bytes]:
    """The records of a receipt log, a torn last one left out."""
    out: list[bytes] = []
    pos = 0
    while pos + _LEN.size <= len(data):
        (n,) = _LEN.unpack_from(data, pos)
        if pos + _LEN.size + n > len(data):
            break
        out.append(data[pos + _LEN.size : pos + _LEN.size + n])
        pos += _LEN.size + n
    return out


class ReceiptLog:
    """The vault's receipt files; :meth:`append` from the uplink thread, reads from anywhere.

    ``_lock`` serialises appends within the process (one edged per data directory).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        # Per file checked since the start (its tail, once): the (sequence, chain hash) pairs
        # it holds. A delivery sent again (its answer lost) gets a second receipt of the same
        # segment; the first, earlier one is the one worth keeping.
        self._held: dict[Path, set[tuple[int, bytes]]] = {}

    def path(self, camera_id: str, start_wall_ns: int) -> Path:
        day = day_of(start_wall_ns)
        return self.root / "receipts" / camera_id / f"{day}.rcl"

    def append(self, camera_id: str, start_wall_ns: int, raw: bytes) -> None:
        """Durable before it returns: one record appended and fsynced, unless the log already
        holds a receipt of the same segment (sequence and chain hash)."""
        path = self.path(camera_id, start_wall_ns)
        receipt = parse_receipt(raw)
        segment = (receipt.sequence, receipt.chain_hash)
        with self._lock:
            try:
                fresh = not path.parent.is_dir()
                path.parent.mkdir(parents=True, exist_ok=True)
                if fresh:
                    fsync_dir(path.parent.parent)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    size = os.fstat(fd).st_size
                    held = self._held.get(path)
                    if held is None:
                        # Once per file and run: a record torn by a power cut is cut off, or
                        # every record after it would be read out of step; its bytes are kept.
                        data = path.read_bytes()
                        records = split_records(data)
                        kept = sum(len(r) + _LEN.size for r in records)
                        if kept != size:
                            self._quarantine_tail(fd, path, camera_id, kept, data[kept:])
                        held = self._held[path] = set()
                        for record in records:
                            try:
                                r = parse_receipt(record)
                            except IntegrityError:
                                continue  # readers judge it; it is not this segment's
                            held.add((r.sequence, r.chain_hash))
                    if segment in held:
                        return
                    os.write(fd, frame_record(raw))
                    os.fsync(fd)
                    held.add(segment)
                finally:
                    os.close(fd)
                if size == 0:
                    fsync_dir(path.parent)
            except OSError as exc:
                raise VaultError(f"{path}: receipt not stored: {exc.strerror}") from None

    def _quarantine_tail(self, fd: int, path: Path, camera_id: str, kept: int, data: bytes) -> None:
        """Copy the torn bytes aside (durably), say so, then cut them off the log."""
        dest = self.root / "quarantine" / f"{time.time_ns()}-{camera_id}-{path.stem}.rcl.tail"
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, data, mode=0o640)
        log.warning(
            "receipts of %s on %s: a torn last record (%d bytes, sha256 %s) was moved to %s",
            camera_id,
            path.stem,
            len(data),
            hashlib.sha256(data).hexdigest()[:16],
            dest,
        )
        os.ftruncate(fd, kept)
        os.fsync(fd)

    def purge_before(self, camera_id: str, day: str) -> int:
        """Retention: remove the camera's receipt files of days before ``day`` (YYYY-MM-DD)."""
        count = 0
        for path in sorted((self.root / "receipts" / camera_id).glob("*.rcl")):
            if path.stem < day:
                path.unlink(missing_ok=True)
                self._held.pop(path, None)
                count += 1
        return count

    def read(self, camera_id: str, days: set[str]) -> list[bytes]:
        out: list[bytes] = []
        for day in sorted(days):
            try:
                data = (self.root / "receipts" / camera_id / f"{day}.rcl").read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise VaultError(f"receipts of {camera_id} on {day}: {exc.strerror}") from None
            out += split_records(data)
        return out


def day_of(wall_ns: int) -> str:
    """The UTC day naming the receipt file of a segment that starts at ``wall_ns``."""
    return dt.datetime.fromtimestamp(wall_ns / 1e9, dt.UTC).strftime("%Y-%m-%d")


# --- what a bundle's receipts cover --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coverage:
    """How one segment of a bundle is anchored at the CSU."""

    segment: fmt.SealedSegment
    receipt: Receipt | None
    """The receipt of this segment, or of a later one its chain leads to; None: not receipted."""

    @property
    def direct(self) -> bool:
        return self.receipt is not None and self.receipt.sequence == self.segment.header.sequence


def check_bundle_receipts(
    raws: list[bytes],
    segments: list[fmt.SealedSegment],
    csu_key: ed25519.Ed25519PublicKey,
    device_id: str,
) -> list[Receipt]:
    """Every receipt must be the CSU's, for this unit, and of the very segment the bundle holds
    under its sequence; :class:`IntegrityError` names the first that is not."""
    held = {(s.header.camera_id, s.header.sequence): s for s in segments}
    out = []
    for raw in raws:
        receipt = parse_receipt(raw)
        seg = held.get((receipt.camera_id, receipt.sequence))
        if seg is None:
            raise IntegrityError(
                f"receipt {receipt.camera_id}#{receipt.sequence}: no such segment in the bundle"
            )
        out.append(
            verify_receipt(
                raw,
                csu_key,
                device_id=device_id,
                camera_id=receipt.camera_id,
                sequence=receipt.sequence,
                chain_hash=seg.chain_hash,
            )
        )
    return out


def coverage(segments: list[fmt.SealedSegment], receipts: list[Receipt]) -> list[Coverage]:
    """Per segment, the receipt anchoring it: its own, or the earliest later one reached through
    unbroken ``prev_hash`` links (a receipt of #N fixes every segment its chain goes through)."""
    by_seq: dict[tuple[str, int], Receipt] = {}
    for r in receipts:
        key = (r.camera_id, r.sequence)
        if key not in by_seq or r.csu_time_ns < by_seq[key].csu_time_ns:
            by_seq[key] = r
    out: list[Coverage] = []
    later: dict[str, tuple[fmt.SealedSegment, Receipt | None]] = {}
    for seg in reversed(segments):
        h = seg.header
        anchor = by_seq.get((h.camera_id, h.sequence))
        if anchor is None and h.camera_id in later:
            nxt, nxt_anchor = later[h.camera_id]
            if nxt.header.prev_hash == seg.chain_hash:
                anchor = nxt_anchor
        later[h.camera_id] = (seg, anchor)
        out.append(Coverage(seg, anchor))
    out.reverse()
    return out

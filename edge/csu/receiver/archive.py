"""What the CSU keeps: verified sealed segments per unit / camera / sequence, their envelopes,
events, and what each unit last reported.

Layout under ``storage_dir`` (readable with ``ls``)::

    <unit>/<camera>/<sequence:012d>.seg     the sealed bytes exactly as the unit sent them
    <unit>/<camera>/index.jsonl            one line per stored segment (hash, prev, times, size)
    <unit>/<camera>/epochs/<epoch>.env     epoch key envelopes (HPKE-sealed data keys)
    <unit>/<camera>/gaps/<first>-<last>.gap  signed records of sequences the unit lost
    <unit>/<camera>/masks/<digest>.json    the unit's signed ``mask-set`` records (polygons)
    <unit>/<camera>/receipts/<sequence:012d>.rct  the receipt this CSU signed of that segment
    <unit>/events/<event-id>.json          verified events
    <unit>/events/<event-id>.unpublished   marker: not yet handed to the MQTT broker
    <unit>/events/<event-id>.snp           the sealed snapshot the event names, as sent
    <unit>/status.json                     last contact, the backlog the unit reported

A segment is accepted only if it parses, its header names the URL's unit, camera and sequence,
its Ed25519 signature verifies with the unit's enrolled key, and it fits the chain: its
``prev_hash`` equals the hash of the stored segment before it, and the stored segment after it
(segments may arrive out of order: live first, backfill later) names it as predecessor. A
retry with the same bytes is acknowledged without storing twice; other bytes under a stored
sequence are refused. Every write is atomic (temp file, fsync, rename, fsync the directory),
and the index can be rebuilt from the ``.seg`` files alone.

Thread-safety: :class:`SegmentStore` methods are called from the receiver's worker threads;
one lock per camera serialises check-then-write for that camera, a store-wide lock protects
the dictionary of camera indexes.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ed25519

from ...errors import IntegrityError, KeyExistsError
from ...fsutil import fsync_dir, write_atomic, write_new
from ...privacy.commitment import MASK_SET_ACTION, MaskSet
from ...vault import format as sealed
from ...vault import snapshots
from ...vault.audit import parse_record
from ...vault.recipient_keys import RecipientPrivate

log = logging.getLogger(__name__)

PURGED_FILE = "purged.jsonl"
_SEG_NAME = re.compile(r"^(\d{12})\.seg\Z")
_GAP_NAME = re.compile(r"^(\d{1,18})-(\d{1,18})\.gap\Z")


class Verdict(enum.Enum):
    STORED = 201
    DUPLICATE = 200


class Refusal(Exception):  # noqa: N818 - a verdict, not a fault: it becomes a 4xx answer
    """A request the store refuses; ``status`` is the HTTP status the receiver answers with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StoredSegment:
    sequence: int
    hash: str
    prev_hash: str
    start_wall_ns: int
    end_wall_ns: int
    frame_count: int
    first_frame_index: int
    epoch_id: str
    size: int
    received_ns: int


@dataclass(frozen=True, slots=True)
class CameraRecords:
    """One camera's records over a time range, read at one moment (the evidence bundle)."""

    segments: list[StoredSegment]
    """Stored segments overlapping the range, by sequence."""
    gaps: list[sealed.GapRecord]
    """Every gap record the unit sent for the camera (they explain holes)."""
    purged: list[tuple[int, int]]
    """Sequence ranges retention deleted (holes that are not losses)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A verified event as stored: its document and when it arrived (Unix seconds)."""

    event_id: str
    body: bytes
    received: float


def _meta_of(seg: sealed.SealedSegment, received_ns: int) -> StoredSegment:
    h = seg.header
    return StoredSegment(
        sequence=h.sequence,
        hash=hashlib.sha256(seg.raw).hexdigest(),
        prev_hash=h.prev_hash.hex(),
        start_wall_ns=h.start_wall_ns,
        end_wall_ns=h.end_wall_ns,
        frame_count=h.frame_count,
        first_frame_index=h.first_frame_index,
        epoch_id=h.epoch_id.hex(),
        size=len(seg.raw),
        received_ns=received_ns,
    )


def checked_segment(
    unit_id: str, camera_id: str, sequence: int, raw: bytes, key: ed25519.Ed25519PublicKey
) -> StoredSegment:
    """What every receiver checks alone, before any chain rule: the bytes parse, the header
    names the URL's unit, camera and sequence, and the unit's signature verifies."""
    try:
        seg = sealed.parse_segment(raw)
    except IntegrityError as exc:
        raise Refusal(400, f"not a sealed segment: {exc}") from None
    h = seg.header
    if (h.device_id, h.camera_id, h.sequence) != (unit_id, camera_id, sequence):
        raise Refusal(
            400,
            f"header names {h.device_id}/{h.camera_id}#{h.sequence}, "
            f"URL names {unit_id}/{camera_id}#{sequence}",
        )
    try:
        sealed.verify_segment(raw, key)
    except IntegrityError as exc:
        raise Refusal(422, str(exc)) from None
    return _meta_of(seg, time.time_ns())


def checked_gap(
    unit_id: str, camera_id: str, first: int, last: int, raw: bytes, key: ed25519.Ed25519PublicKey
) -> sealed.GapRecord:
    """A unit's gap record checked alone: signature, and the URL's unit, camera and range."""
    try:
        gap = sealed.verify_gap(raw, key)
    except IntegrityError as exc:
        status = 400 if "signature" not in str(exc) else 422
        raise Refusal(status, str(exc)) from None
    if (gap.device_id, gap.camera_id, gap.first, gap.last) != (unit_id, camera_id, first, last):
        raise Refusal(400, "gap record does not match the URL")
    return gap


def checked_envelope(
    unit_id: str, camera_id: str, epoch_hex: str, raw: bytes, key: ed25519.Ed25519PublicKey
) -> None:
    """An epoch envelope checked alone: it parses, names the URL's epoch, and is signed."""
    try:
        env = sealed.parse_envelope(raw)
    except IntegrityError as exc:
        raise Refusal(400, f"not an epoch envelope: {exc}") from None
    if (env.device_id, env.camera_id, env.epoch_id.hex()) != (unit_id, camera_id, epoch_hex):
        raise Refusal(400, "envelope header disagrees with the URL")
    try:
        sealed.verify_envelope(raw, key)
    except IntegrityError as exc:
        raise Refusal(422, str(exc)) from None


def checked_mask_set(
    unit_id: str, camera_id: str, digest_hex: str, raw: bytes, key: ed25519.Ed25519PublicKey
) -> None:
    """A unit's ``mask-set`` audit record checked alone: one signed line of the unit's log
    announcing the URL's camera and digest, its polygons hashing to that digest."""
    try:
        rec = parse_record(raw.rstrip(b"\n"), key)
    except IntegrityError as exc:
        raise Refusal(422 if "signature" in str(exc) else 400, f"mask-set record: {exc}") from None
    if rec.action != MASK_SET_ACTION or rec.device != unit_id:
        raise Refusal(400, f"not a mask-set record of {unit_id}")
    try:
        found = MaskSet.from_record(rec.details)
    except IntegrityError as exc:
        raise Refusal(400, str(exc)) from None
    if (found.camera_id, found.digest.hex()) != (camera_id, digest_hex):
        raise Refusal(400, "mask-set record does not match the URL")


def checked_snapshot(
    unit_id: str,
    event_id: str,
    raw: bytes,
    event: dict[str, Any],
    key: ed25519.Ed25519PublicKey,
    private: RecipientPrivate,
) -> bytes:
    """The JPEG of a sealed snapshot checked against the stored, verified ``event`` body it
    claims to belong to: signed by the unit, its header (which the AEAD and the HPKE ``info`` bind)
    naming the unit, the event's camera and the event, and the JPEG inside, opened with the
    CSU's key, of the SHA-256 and size the signed event names."""
    ref = event.get("snapshot")
    if not isinstance(ref, dict):
        raise Refusal(400, f"event {event_id} names no snapshot")
    try:
        snp = snapshots.verify_snapshot_file(raw, key)
    except IntegrityError as exc:
        raise Refusal(422 if "signature" in str(exc) else 400, f"snapshot: {exc}") from None
    bound = (snp.device_id, snp.camera_id, snp.event_id)
    if bound != (unit_id, event.get("camera"), event_id):
        raise Refusal(400, f"snapshot is sealed for {'/'.join(bound)}, not this event")
    try:
        jpeg = snapshots.open_snapshot(snp, private)
    except IntegrityError as exc:
        raise Refusal(422, str(exc)) from None
    if hashlib.sha256(jpeg).hexdigest() != ref.get("sha256") or len(jpeg) != ref.get("size"):
        raise Refusal(422, f"snapshot is not the picture event {event_id} names (SHA-256, size)")
    return jpeg


def ranges(sequences: Iterable[int]) -> list[list[int]]:
    """``[1, 2, 3, 7]`` → ``[[1, 3], [7, 7]]``."""
    out: list[list[int]] = []
    for s in sorted(sequences):
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


class CameraIndex:
    """The stored segments of one camera; loaded from disk on first use."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock = threading.Lock()  # serialises check-then-write for this camera
        self.segments: dict[int, StoredSegment] = {}
        self.gaps: dict[int, sealed.GapRecord] = {}
        """Gap records by *last* lost sequence (the segment after it chains to the record)."""
        self.purged: list[tuple[int, int]] = []
        """Sequence ranges deleted by retention (``purged.jsonl``): not gaps in the chain."""
        self._load()
        self._load_purged()
        for path in sorted((directory / "gaps").glob("*.gap")):
            try:
                gap = sealed.parse_gap(path.read_bytes())
            except (OSError, IntegrityError) as exc:
                log.error("%s: unreadable gap record, ignored: %s", path, exc)
                continue
            self.gaps[gap.last] = gap

    @classmethod
    def of(
        cls, segments: dict[int, StoredSegment], gaps: Iterable[sealed.GapRecord]
    ) -> CameraIndex:
        """An index over rows read elsewhere (cluster mode's database), for :meth:`status`."""
        index = cls.__new__(cls)
        index.directory = Path("/nonexistent")
        index.lock = threading.Lock()
        index.segments = dict(segments)
        index.gaps = {g.last: g for g in gaps}
        index.purged = []
        return index

    def gap_path(self, first: int, last: int) -> Path:
        return self.directory / "gaps" / f"{first}-{last}.gap"

    def conflicts(self) -> list[dict[str, Any]]:
        """Sequences the unit declared lost that this CSU holds: the originals are here, and
        the unit's vault no longer has them. Shown, never resolved silently."""
        out = []
        for gap in sorted(self.gaps.values(), key=lambda g: g.first):
            held = self.held_in(gap.first, gap.last)
            if held:
                out.append({"first": gap.first, "last": gap.last, "held": held[:100]})
        return out

    def _load(self) -> None:
        index = self.directory / "index.jsonl"
        if index.exists():
            for line in index.read_text(encoding="utf-8").splitlines():
                try:
                    meta = StoredSegment(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # a torn last line after a crash: the .seg scan below recovers it
                self.segments[meta.sequence] = meta
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            m = _SEG_NAME.match(path.name)
            if m and int(m.group(1)) not in self.segments:
                try:
                    seg = sealed.parse_segment(path.read_bytes())
                except (OSError, IntegrityError) as exc:
                    log.error("%s: unreadable stored segment, ignored: %s", path, exc)
                    continue
                meta = _meta_of(seg, path.stat().st_mtime_ns)
                self.segments[meta.sequence] = meta
                self._append_index(meta)

    def _append_index(self, meta: StoredSegment) -> None:
        # No fsync: the index is a cache of the .seg files (each fsync'd before the answer);
        # a line lost in a crash is rebuilt from its file by _load.
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "index.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(meta)) + "\n")

    def held_in(self, first: int, last: int) -> list[int]:
        """Stored sequences within ``first..last`` (by the stored ones: a range may be huge)."""
        return sorted(s for s in self.segments if first <= s <= last)

    def _recorded_lost(self, first: int, last: int) -> bool:
        """Whether gap records or retention deletions cover every sequence of ``first..last``
        (interval walk: the ranges come from the unit and may be huge)."""
        at = first
        spans = [(g.first, g.last) for g in self.gaps.values()] + [(a, b) for a, b in self.purged]
        for lo, hi in sorted(spans):
            if lo <= at <= hi:
                at = hi + 1
            if at > last:
                return True
        return False

    def _load_purged(self) -> None:
        try:
            lines = (self.directory / PURGED_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                self.purged += [(int(a), int(b)) for a, b in json.loads(line)]
            except (ValueError, TypeError):
                continue  # a torn last line: the signed deletion records are the authority

    def segment_path(self, sequence: int) -> Path:
        return self.directory / f"{sequence:012d}.seg"

    def receipt_path(self, sequence: int) -> Path:
        return self.directory / "receipts" / f"{sequence:012d}.rct"

    def delete(self, sequences: list[int]) -> None:
        """Delete stored segments (retention, :mod:`.purge`; the caller holds ``lock``): the
        index is rewritten without them first, then the files go, then epoch envelopes no
        remaining segment needs. A crash in between leaves files the next purge finds again."""
        gone = {s: self.segments[s] for s in sequences if s in self.segments}
        kept = [m for s, m in sorted(self.segments.items()) if s not in gone]
        spans = ranges(gone)
        # Only so that `edge-csu units` does not call a deletion a gap: not fsync'd.
        with (self.directory / PURGED_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(spans) + "\n")
        self.purged += [(a, b) for a, b in spans]
        write_atomic(
            self.directory / "index.jsonl",
            "".join(json.dumps(asdict(m)) + "\n" for m in kept).encode(),
        )
        for s in gone:
            self.segments.pop(s)
            self.segment_path(s).unlink(missing_ok=True)
            self.receipt_path(s).unlink(missing_ok=True)
        still_needed = {m.epoch_id for m in kept}
        for epoch in {m.epoch_id for m in gone.values()} - still_needed:
            (self.directory / "epochs" / f"{epoch}.env").unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        """First/last sequence, count, gaps (missing ranges) and whether the chain is whole."""
        if not self.segments:
            return {"count": 0, "first": None, "last": None, "gaps": [], "chain": "empty"}
        seqs = sorted(self.segments)
        gaps: list[list[int]] = []
        for a, b in itertools.pairwise(seqs):
            if b != a + 1 and not self._recorded_lost(a + 1, b - 1):
                gaps.append([a + 1, b - 1])
        lost = [[g.first, g.last] for g in sorted(self.gaps.values(), key=lambda g: g.first)]
        purged = sum(b - a + 1 for a, b in self.purged)
        conflicts = self.conflicts()
        chain = "complete" if not gaps else "gaps"
        if lost:
            chain = "conflict" if conflicts else f"{chain}, losses recorded by the unit"
        return {
            "count": len(seqs),
            "first": seqs[0],
            "last": seqs[-1],
            "gaps": gaps[:100],
            "lost_at_unit": lost[:100],
            "conflicts": conflicts,
            "chain": chain,
            "purged_by_retention": purged,
            "bytes": sum(m.size for m in self.segments.values()),
            "last_end_wall_ns": self.segments[seqs[-1]].end_wall_ns,
        }


class SegmentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # protects _cameras
        self._cameras: dict[tuple[str, str], CameraIndex] = {}

    def camera(self, unit_id: str, camera_id: str) -> CameraIndex:
        key = (unit_id, camera_id)
        with self._lock:
            index = self._cameras.get(key)
            if index is None:
                index = CameraIndex(self.root / unit_id / camera_id)
                self._cameras[key] = index
            return index

    def cursor(self, unit_id: str) -> dict[str, Any]:
        """What a unit resumes from (``GET .../cursor``): per camera, first, last, count, gaps."""
        cams = {}
        for cam in self.cameras_of(unit_id):
            status = self.camera(unit_id, cam).status()
            cams[cam] = {k: status[k] for k in ("first", "last", "count", "gaps")}
        return {"unit": unit_id, "cameras": cams}

    def cameras_of(self, unit_id: str) -> list[str]:
        base = self.root / unit_id
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and p.name != "events")

    # --- segments -------------------------------------------------------------------------------

    def accept_segment(
        self,
        unit_id: str,
        camera_id: str,
        sequence: int,
        raw: bytes,
        key: ed25519.Ed25519PublicKey,
    ) -> tuple[Verdict, StoredSegment]:
        meta = checked_segment(unit_id, camera_id, sequence, raw, key)
        index = self.camera(unit_id, camera_id)
        with index.lock:
            held = index.segments.get(sequence)
            if held is not None:
                if held.hash == meta.hash:
                    return Verdict.DUPLICATE, held
                raise Refusal(409, f"{camera_id}#{sequence} is already stored with other bytes")
            before = index.segments.get(sequence - 1)
            gap = index.gaps.get(sequence - 1)
            if gap is not None:
                # The unit lost what came before and recorded it: the chain goes through the
                # record (even where this CSU holds the originals: that conflict is reported).
                if gap.chain_hash.hex() != meta.prev_hash:
                    raise Refusal(
                        409, f"{camera_id}#{sequence} does not continue the unit's gap record"
                    )
            elif before is not None and before.hash != meta.prev_hash:
                raise Refusal(409, f"{camera_id}#{sequence} does not continue #{sequence - 1}")
            after = index.segments.get(sequence + 1)
            if after is not None and after.prev_hash != meta.hash:
                raise Refusal(409, f"#{sequence + 1} does not continue {camera_id}#{sequence}")
            index.directory.mkdir(parents=True, exist_ok=True)
            write_atomic(index.segment_path(sequence), raw)
            index._append_index(meta)
            index.segments[sequence] = meta
        return Verdict.STORED, meta

    def keep_receipt(self, unit_id: str, camera_id: str, sequence: int, raw: bytes) -> bytes:
        """Keep the receipt just signed of a stored segment, unless one is kept already (a
        delivery sent again, racing or after a restart): the first is kept, never replaced,
        and returned, so the unit and the CSU hold the same receipt. Durable before it returns
        (written under a temporary name, fsynced, linked exclusively)."""
        path = self.camera(unit_id, camera_id).receipt_path(sequence)
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(path.parent.parent)
        try:
            write_new(path, raw, mode=0o640)
        except KeyExistsError:
            return path.read_bytes()
        return raw

    def read_receipts(
        self, unit_id: str, camera_id: str, sequences: Iterable[int]
    ) -> dict[int, bytes]:
        """The receipts this CSU kept of those segments, by sequence (one signed before the CSU
        kept its receipts is absent)."""
        index = self.camera(unit_id, camera_id)
        out = {}
        for s in sequences:
            try:
                out[s] = index.receipt_path(s).read_bytes()
            except FileNotFoundError:
                continue
        return out

    def accept_gap(
        self,
        unit_id: str,
        camera_id: str,
        first: int,
        last: int,
        raw: bytes,
        key: ed25519.Ed25519PublicKey,
    ) -> tuple[Verdict, list[int]]:
        """Store a unit's signed gap record; returns the verdict and the lost sequences this
        CSU holds (a conflict the caller must report: the originals exist here)."""
        gap = checked_gap(unit_id, camera_id, first, last, raw, key)
        index = self.camera(unit_id, camera_id)
        with index.lock:
            held = index.held_in(first, last)
            stored = index.gaps.get(last)
            if stored is not None:
                if stored.raw == raw:
                    return Verdict.DUPLICATE, held
                raise Refusal(409, f"{camera_id}: another gap record ends at #{last}")
            before = index.segments.get(first - 1)
            if before is not None and before.hash != gap.prev_hash.hex():
                raise Refusal(409, f"{camera_id}: gap record does not continue #{first - 1}")
            path = index.gap_path(first, last)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, raw)
            index.gaps[last] = sealed.parse_gap(raw)
        return Verdict.STORED, held

    def read_segment(self, unit_id: str, camera_id: str, sequence: int) -> bytes:
        return self.camera(unit_id, camera_id).segment_path(sequence).read_bytes()

    # --- epoch envelopes ------------------------------------------------------------------------

    def accept_envelope(
        self,
        unit_id: str,
        camera_id: str,
        epoch_hex: str,
        raw: bytes,
        key: ed25519.Ed25519PublicKey,
    ) -> Verdict:
        checked_envelope(unit_id, camera_id, epoch_hex, raw, key)
        directory = self.root / unit_id / camera_id / "epochs"
        path = directory / f"{epoch_hex}.env"
        index = self.camera(unit_id, camera_id)
        with index.lock:
            if path.exists():
                if path.read_bytes() == raw:
                    return Verdict.DUPLICATE
                raise Refusal(409, f"epoch {epoch_hex} is already stored with other bytes")
            directory.mkdir(parents=True, exist_ok=True)
            write_atomic(path, raw)
        return Verdict.STORED

    def read_envelope(self, unit_id: str, camera_id: str, epoch_hex: str) -> bytes | None:
        path = self.root / unit_id / camera_id / "epochs" / f"{epoch_hex}.env"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    # --- mask sets ----------------------------------------------------------------------------

    def accept_mask_set(
        self,
        unit_id: str,
        camera_id: str,
        digest_hex: str,
        raw: bytes,
        key: ed25519.Ed25519PublicKey,
    ) -> Verdict:
        """Keep the unit's signed record of a mask set, once: the digest names the polygons,
        so any intact record of it proves the same set (a later one is a duplicate)."""
        checked_mask_set(unit_id, camera_id, digest_hex, raw, key)
        line = raw.rstrip(b"\n") + b"\n"
        directory = self.root / unit_id / camera_id / "masks"
        path = directory / f"{digest_hex}.json"
        index = self.camera(unit_id, camera_id)
        with index.lock:
            if path.exists():
                return Verdict.DUPLICATE
            directory.mkdir(parents=True, exist_ok=True)
            write_atomic(path, line)
        return Verdict.STORED

    def read_mask_set(self, unit_id: str, camera_id: str, digest_hex: str) -> bytes | None:
        path = self.root / unit_id / camera_id / "masks" / f"{digest_hex}.json"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def masks_in_force(
        self, unit_id: str, camera_id: str, key: ed25519.Ed25519PublicKey
    ) -> dict[str, Any] | None:
        if not (self.root / unit_id / camera_id).is_dir():
            return None
        return masks_in_force(self, unit_id, camera_id, key)

    # --- events ---------------------------------------------------------------------------------

    def store_event(
        self, unit_id: str, event_id: str, body: bytes, *, to_publish: bool = False
    ) -> Verdict:
        """Store a verified event once. With ``to_publish`` the event is also marked as not yet
        published (``<event-id>.unpublished``, written first), so that a publish that fails is
        retried when the unit sends the event again, rather than lost to "duplicate"."""
        directory = self.root / unit_id / "events"
        path = directory / f"{event_id}.json"
        with self._lock:
            if path.exists():
                if path.read_bytes() == body:
                    return Verdict.DUPLICATE
                raise Refusal(409, f"event {event_id} is already stored with other content")
            directory.mkdir(parents=True, exist_ok=True)
            if to_publish:
                write_atomic(self._unpublished(unit_id, event_id), b"")
            write_atomic(path, body)
        return Verdict.STORED

    def stored_events(self, unit_id: str) -> Iterator[bytes]:
        """Every event stored for the unit (the signed wire forms, as received), in no order."""
        directory = self.root / unit_id / "events"
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            try:
                yield path.read_bytes()
            except FileNotFoundError:
                continue  # deleted meanwhile

    def read_event(self, unit_id: str, event_id: str) -> bytes | None:
        try:
            return (self.root / unit_id / "events" / f"{event_id}.json").read_bytes()
        except FileNotFoundError:
            return None

    def accept_snapshot(
        self,
        unit_id: str,
        event_id: str,
        raw: bytes,
        key: ed25519.Ed25519PublicKey,
        private: RecipientPrivate,
    ) -> Verdict:
        """Keep the sealed snapshot of a stored event, once, after
        :func:`checked_snapshot`; the same bytes again are a duplicate, other bytes a 409."""
        event = self._verified_event(unit_id, event_id, key)
        checked_snapshot(unit_id, event_id, raw, event, key, private)
        path = self.snapshot_path(unit_id, event_id)
        with self._lock:
            if path.exists():
                if path.read_bytes() == raw:
                    return Verdict.DUPLICATE
                raise Refusal(409, f"a snapshot of event {event_id} is already stored")
            write_atomic(path, raw)
        return Verdict.STORED

    def _verified_event(
        self, unit_id: str, event_id: str, key: ed25519.Ed25519PublicKey
    ) -> dict[str, Any]:
        from edge.events import verify_wire  # local: edge.events pulls in numpy and PIL

        stored = self.read_event(unit_id, event_id)
        if stored is None:
            raise Refusal(404, f"event {event_id} of {unit_id} is not stored here")
        try:
            return verify_wire(stored, key)
        except IntegrityError as exc:
            raise Refusal(409, f"stored event {event_id} no longer verifies: {exc}") from None

    def open_snapshot(
        self,
        unit_id: str,
        event_id: str,
        key: ed25519.Ed25519PublicKey,
        private: RecipientPrivate,
    ) -> tuple[dict[str, Any], bytes]:
        """(event body, JPEG) of a held snapshot, every check of :meth:`accept_snapshot` made
        again (the file may have been altered since): :class:`Refusal` 404 when not held."""
        event = self._verified_event(unit_id, event_id, key)
        raw = self.read_snapshot(unit_id, event_id)
        if raw is None:
            raise Refusal(404, f"no snapshot of event {event_id} of {unit_id} is held")
        return event, checked_snapshot(unit_id, event_id, raw, event, key, private)

    def snapshot_path(self, unit_id: str, event_id: str) -> Path:
        """Where the sealed snapshot of a stored event is (or would be) kept."""
        return self.root / unit_id / "events" / f"{event_id}.snp"

    def read_snapshot(self, unit_id: str, event_id: str) -> bytes | None:
        try:
            return self.snapshot_path(unit_id, event_id).read_bytes()
        except FileNotFoundError:
            return None

    def _unpublished(self, unit_id: str, event_id: str) -> Path:
        return self.root / unit_id / "events" / f"{event_id}.unpublished"

    def is_unpublished(self, unit_id: str, event_id: str) -> bool:
        return self._unpublished(unit_id, event_id).exists()

    def mark_published(self, unit_id: str, event_id: str) -> None:
        self._unpublished(unit_id, event_id).unlink(missing_ok=True)

    def claim_unpublished(self, limit: int, min_age_s: float) -> list[tuple[str, str, bytes]]:
        """Up to ``limit`` stored events still marked unpublished, their marker at least
        ``min_age_s`` old, the oldest first: (unit, event id, body). One receiver serves an
        embedded store, so nothing else claims them. A marker without its event (a crash
        between the two writes: the unit was never answered, it sends the event again) is
        removed."""
        cutoff = time.time() - min_age_s
        found: list[tuple[float, str, str]] = []
        for unit_dir in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            directory = unit_dir / "events"
            if not directory.is_dir():
                continue
            for marker in directory.glob("*.unpublished"):
                try:
                    mtime = marker.stat().st_mtime
                except FileNotFoundError:
                    continue  # published meanwhile
                if mtime <= cutoff:
                    found.append((mtime, unit_dir.name, marker.stem))
        out: list[tuple[str, str, bytes]] = []
        for _, unit_id, event_id in sorted(found):
            if len(out) >= limit:
                break
            path = self.root / unit_id / "events" / f"{event_id}.json"
            with self._lock:  # store_event writes the marker, then the event, under it
                try:
                    body = path.read_bytes()
                except FileNotFoundError:
                    self._unpublished(unit_id, event_id).unlink(missing_ok=True)
                    continue
            out.append((unit_id, event_id, body))
        return out

    # --- unit status ----------------------------------------------------------------------------

    def write_status(self, unit_id: str, status: dict[str, Any]) -> None:
        # Diagnostics only: atomic (readers never see half a file) but not fsync'd, so it can
        # be refreshed often for thousands of units.
        directory = self.root / unit_id
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / "status.json", json.dumps(status).encode(), durable=False)

    def read_status(self, unit_id: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.root / unit_id / "status.json").read_bytes())
        except (OSError, ValueError):
            return {}
        return data

    # --- the read side (:class:`.base.SegmentReader`): what the operators' listener reads -------

    def units(self) -> list[str]:
        return (
            sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        )

    def latest(self, unit_id: str, camera_id: str, count: int) -> list[StoredSegment]:
        segments = dict(self.camera(unit_id, camera_id).segments)
        return [segments[s] for s in sorted(segments)[-count:]]

    def in_range(
        self, unit_id: str, camera_id: str, from_ns: int, to_ns: int
    ) -> list[StoredSegment]:
        segments = dict(self.camera(unit_id, camera_id).segments)
        return _overlapping(segments, from_ns, to_ns)

    def span(self, unit_id: str, camera_id: str) -> tuple[int, int] | None:
        segments = list(self.camera(unit_id, camera_id).segments.values())
        if not segments:
            return None
        return min(s.start_wall_ns for s in segments), max(s.end_wall_ns for s in segments)

    def records(self, unit_id: str, camera_id: str, from_ns: int, to_ns: int) -> CameraRecords:
        index = self.camera(unit_id, camera_id)
        with index.lock:  # one moment: no upload or purge of the camera in between
            return CameraRecords(
                _overlapping(index.segments, from_ns, to_ns),
                sorted(index.gaps.values(), key=lambda g: g.first),
                list(index.purged),
            )

    def events(self, unit_id: str) -> list[StoredEvent]:
        return EventFiles(self.root).events(unit_id)

    def event(self, unit_id: str, event_id: str) -> StoredEvent | None:
        return EventFiles(self.root).event(unit_id, event_id)

    def has_snapshot(self, unit_id: str, event_id: str) -> bool:
        return self.snapshot_path(unit_id, event_id).is_file()


def _overlapping(
    segments: dict[int, StoredSegment], from_ns: int, to_ns: int
) -> list[StoredSegment]:
    return [
        segments[s]
        for s in sorted(segments)
        if segments[s].end_wall_ns > from_ns and segments[s].start_wall_ns < to_ns
    ]


class EventFiles:
    """The events of a storage directory, read only (``<unit>/events/<id>.json``; arrival:
    the file's modification time). What :class:`SegmentStore` answers, without creating
    the directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def units(self) -> list[str]:
        return (
            sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        )

    def events(self, unit_id: str) -> list[StoredEvent]:
        directory = self.root / unit_id / "events"
        out = []
        for path in directory.glob("*.json") if directory.is_dir() else ():
            try:
                out.append(StoredEvent(path.stem, path.read_bytes(), path.stat().st_mtime))
            except OSError:
                continue  # deleted by retention meanwhile
        return out

    def event(self, unit_id: str, event_id: str) -> StoredEvent | None:
        path = self.root / unit_id / "events" / f"{event_id}.json"
        try:
            return StoredEvent(event_id, path.read_bytes(), path.stat().st_mtime)
        except OSError:
            return None

    def has_snapshot(self, unit_id: str, event_id: str) -> bool:
        return (self.root / unit_id / "events" / f"{event_id}.snp").is_file()


class _MaskReader(Protocol):
    def latest(self, unit_id: str, camera_id: str, count: int) -> list[StoredSegment]: ...

    def read_segment(self, unit_id: str, camera_id: str, sequence: int) -> bytes: ...

    def read_mask_set(self, unit_id: str, camera_id: str, digest_hex: str) -> bytes | None: ...


def masks_in_force(
    store: _MaskReader, unit_id: str, camera_id: str, key: ed25519.Ed25519PublicKey
) -> dict[str, Any] | None:
    """The mask set the camera's newest stored segment commits to (the last one in force
    in it), for the console's outline overlay: ``{"sequence", "digest", "held", "width",
    "height", "masks": [{"name", "points"}]}`` (points as fractions of the frame); digest
    None for a segment that commits to none, held False when the CSU has no record of
    that set. None when nothing is stored. The segment's signature is checked (the
    commitment is signed); :class:`IntegrityError` when it fails."""
    newest_segments = store.latest(unit_id, camera_id, 1)
    if not newest_segments:
        return None
    newest = newest_segments[-1].sequence
    seg = sealed.verify_segment(
        store.read_segment(unit_id, camera_id, newest), key, device_id=unit_id
    )
    out: dict[str, Any] = {"sequence": newest, "digest": None, "held": False, "masks": []}
    if not seg.header.masks:
        return out
    digest = seg.header.masks[-1].committed.mask_set
    out["digest"] = digest.hex()
    record = store.read_mask_set(unit_id, camera_id, digest.hex())
    if record is None:
        return out
    found = MaskSet.from_record(parse_record(record.rstrip(b"\n"), key).details)
    if found.digest != digest or found.camera_id != camera_id:
        raise IntegrityError(f"mask-set record {digest.hex()[:16]}… is of another set")
    out.update(
        held=True,
        width=found.width,
        height=found.height,
        masks=[{"name": m["name"], "points": m["points"]} for m in found.masks],
    )
    return out

"""Verification without any decryption key: signatures, the hash chain, retention checkpoints.

:func:`verify_vault` walks the files themselves (not the index, which is only a cache) and
tells apart segments *purged by retention* (covered by a signed checkpoint), segments
*missing* (a gap the checkpoint does not cover), *altered* ones (bad signature, bad format,
moved or renamed), *duplicates* and *chain breaks* (a previous-hash that does not match).

:class:`ChainVerifier` does the same one segment at a time, for a receiver (the CSU) that gets
sealed segments over the network.

It also checks the audit log against its head anchor (:func:`edge.vault.audit.check_audit`).
What it cannot see is listed in :data:`CANNOT_SEE`.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import IntegrityError, VaultError
from . import chain, layout
from . import format as fmt
from . import receipt as rcpt
from .audit import AuditRecord, check_audit
from .eventlog import read_events

if TYPE_CHECKING:
    from .store import Vault


class FindingKind(StrEnum):
    ALTERED = "altered"
    MISSING = "missing"
    DUPLICATE = "duplicate"
    CHAIN = "chain-broken"
    ENVELOPE = "envelope"
    CHECKPOINT = "checkpoint"
    AUDIT = "audit"
    EVENT = "event"
    """A kept event or its sealed snapshot that does not verify, is misplaced or missing."""
    GAP = "gap"
    """Sequences the unit issued and lost, recorded at start-up by a signed gap record: the
    chain goes on through the record, the loss is reported (never a silent pass)."""
    RECEIPT = "receipt"
    """A kept CSU receipt that is not the CSU's, or that names other bytes than the segment
    held under its sequence (the past was rewritten after the CSU receipted it)."""


CANNOT_SEE = (
    "a whole-vault rollback (the data directory, or the vault with its audit log and anchor, "
    "replaced by an older consistent copy) or a rewrite by someone holding the unit's signing "
    "key: everything on the unit still agrees with itself; only the CSU's copy of the "
    "recordings and its receipts show it",
)
"""What a verification on the unit alone cannot see (printed by ``edgectl verify``)."""


@dataclass(frozen=True, slots=True)
class _Verified:
    """What the chain check needs of a segment once its signature holds: its header and the
    hash of its bytes, never the bytes (a month of video does not fit in memory)."""

    header: fmt.SegmentHeader
    chain_hash: bytes


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    camera_id: str
    detail: str
    sequence: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = f"{self.camera_id}#{self.sequence}" if self.sequence is not None else self.camera_id
        return f"{self.kind}: {where}: {self.detail}" + (f" ({self.path})" if self.path else "")


@dataclass
class CameraSummary:
    segments_ok: int = 0
    first: int | None = None
    last: int | None = None
    purged_through: int | None = None
    """Sequences up to this one were purged by retention (signed checkpoint)."""
    purged_count: int = 0
    time_gaps: list[tuple[int, float]] = field(default_factory=list)
    """(wall-clock ns where nothing more was recorded, seconds until the next segment): true
    times, not integrity problems (a camera outage, edged stopped, an evicted segment)."""
    lost: list[tuple[int, int]] = field(default_factory=list)
    """Ranges of sequences lost and recorded by signed gap records."""
    receipts_ok: int = 0
    """CSU receipts kept for the segments checked that are the CSU's and match (with a key)."""
    receipted_through: int | None = None
    """The highest sequence a matching CSU receipt names."""


@dataclass
class AuditSummary:
    records: int = 0
    last_seq: int | None = None
    head_seq: int | None = None
    """The sequence the signed head anchor names (None: no anchor)."""
    incidents: list[AuditRecord] = field(default_factory=list)
    """Damage found earlier, quarantined and recorded in a signed ``audit-damage`` record."""


@dataclass
class VerifyReport:
    cameras: dict[str, CameraSummary] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    envelopes_ok: int = 0
    events_ok: int = 0
    """Kept events (and their snapshots) that verify."""
    audit: AuditSummary | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "envelopes_ok": self.envelopes_ok,
            "events_ok": self.events_ok,
            "cameras": {
                cam: {
                    "segments_ok": s.segments_ok,
                    "first_sequence": s.first,
                    "last_sequence": s.last,
                    "purged_by_retention_through": s.purged_through,
                    "purged_by_retention_count": s.purged_count,
                    "time_gaps": [
                        {"after_wall_ns": at, "seconds": round(sec, 3)} for at, sec in s.time_gaps
                    ],
                    "lost_sequences": [list(r) for r in s.lost],
                    "receipts_ok": s.receipts_ok,
                    "receipted_through": s.receipted_through,
                }
                for cam, s in self.cameras.items()
            },
            "findings": [
                {
                    "kind": f.kind.value,
                    "camera": f.camera_id,
                    "sequence": f.sequence,
                    "detail": f.detail,
                    "path": f.path,
                }
                for f in self.findings
            ],
            "audit": _audit_dict(self.audit),
            "cannot_see": list(CANNOT_SEE),
        }


def _audit_dict(audit: AuditSummary | None) -> dict[str, object] | None:
    if audit is None:
        return None
    return {
        "records": audit.records,
        "last_sequence": audit.last_seq,
        "head_anchor_sequence": audit.head_seq,
        "recorded_incidents": [
            {"sequence": r.seq, "time_ns": r.time_ns, "details": r.details} for r in audit.incidents
        ],
    }


def _index_tails(root: Path) -> dict[str, int]:
    """Last sequence per camera according to the index (a hint to detect a missing tail)."""
    path = root / "index.sqlite"
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT camera, MAX(seq) FROM segments GROUP BY camera").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return {}
    return {str(c): int(s) for c, s in rows}


def verify_vault(
    root: Path,
    public_key: ed25519.Ed25519PublicKey,
    *,
    device_id: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    progress: Callable[[int], None] | None = None,
    audit: bool = True,
    receipt_key: ed25519.Ed25519PublicKey | None = None,
) -> VerifyReport:
    """Every segment, envelope and checkpoint (in the range, if given), and with ``audit`` the
    whole audit log and its head anchor. With ``receipt_key`` (the CSU's, as the uplink
    trusts it), the receipts kept for the segments checked too."""
    report = VerifyReport()
    ranged = start_ns is not None or end_ns is not None
    lo = start_ns if start_ns is not None else -(2**63)
    hi = end_ns if end_ns is not None else 2**63 - 1
    tails = {} if ranged else _index_tails(root)
    checked = 0
    for camera in layout.camera_ids(root):
        summary = report.cameras.setdefault(camera, CameraSummary())
        ckp: fmt.Checkpoint | None = None
        ckp_path = layout.checkpoint_path(root, camera)
        if ckp_path.exists():
            try:
                ckp = fmt.verify_checkpoint(ckp_path.read_bytes(), public_key)
                summary.purged_through, summary.purged_count = ckp.purged_through, ckp.purged_count
            except IntegrityError as exc:
                report.findings.append(
                    Finding(FindingKind.CHECKPOINT, camera, str(exc), path=str(ckp_path))
                )
        envelopes = _verify_envelopes(root, camera, public_key, report)
        gaps = _load_gaps(root, camera, public_key, device_id, report)
        by_seq: dict[int, list[tuple[_Verified, Path]]] = {}
        misplaced: list[tuple[int, Path]] = []
        lo_hour = layout.hour_of(max(lo - 3_600_000_000_000, 0)) if ranged else ("", "")
        hi_hour = layout.hour_of(min(hi, 2**62)) if ranged else ("9", "9")
        for day, hour, hdir in layout.hour_dirs(root, camera):
            if not lo_hour <= (day, hour) <= hi_hour:
                continue
            for entry in sorted(hdir.iterdir()):
                m = layout.SEGMENT_RE.match(entry.name)
                if not m:
                    continue
                checked += 1
                if progress is not None and checked % 256 == 0:
                    progress(checked)
                try:
                    seg = fmt.verify_segment(entry.read_bytes(), public_key, device_id=device_id)
                except (IntegrityError, OSError) as exc:
                    report.findings.append(
                        Finding(FindingKind.ALTERED, camera, str(exc), int(m.group(2)), str(entry))
                    )
                    continue
                h = seg.header
                if entry != layout.segment_path(root, camera, h.start_wall_ns, h.sequence):
                    misplaced.append((h.sequence, entry))
                    continue
                if h.end_wall_ns <= lo or h.start_wall_ns >= hi:
                    continue
                by_seq.setdefault(h.sequence, []).append((_Verified(h, seg.chain_hash), entry))
        for seq, entry in misplaced:
            if seq in by_seq:
                kind, what = FindingKind.DUPLICATE, f"copy of #{seq} under another name"
            else:
                kind, what = FindingKind.ALTERED, "file name or place does not match its header"
            report.findings.append(
                Finding(kind, camera, f"{what} (moved, renamed or reordered)", seq, str(entry))
            )
        _check_chain(
            camera, by_seq, ckp, envelopes, ranged, tails.get(camera), summary, report, gaps
        )
        summary.time_gaps = time_gaps([copies[0][0].header for _, copies in sorted(by_seq.items())])
        if receipt_key is not None:
            _check_receipts(root, camera, by_seq, receipt_key, device_id, summary, report)
    for ev in read_events(root, public_key, start_ns=start_ns, end_ns=end_ns, device_id=device_id):
        problem = ev.problem or ev.snapshot_problem
        if problem is None:
            report.events_ok += 1
        else:
            report.findings.append(
                Finding(FindingKind.EVENT, ev.camera, problem, path=str(ev.path))
            )
    if audit:
        verify_audit_log(root, public_key, report)
    return report


def verify_audit_log(
    root: Path, public_key: ed25519.Ed25519PublicKey, report: VerifyReport
) -> None:
    """Add the audit log's problems to ``report`` as findings, and its summary."""
    path = root / "audit.log"
    if not path.exists() and (report.cameras or report.envelopes_ok):
        # Every start of the vault writes a record: recordings without a log lost it.
        report.findings.append(
            Finding(FindingKind.AUDIT, "audit.log", "missing although the vault holds recordings")
        )
    try:
        check = check_audit(path, public_key)
    except VaultError as exc:
        report.findings.append(Finding(FindingKind.AUDIT, "audit.log", str(exc)))
        return
    report.audit = AuditSummary(
        len(check.records),
        check.last_seq,
        check.head.seq if check.head is not None else None,
        check.incidents,
    )
    report.findings.extend(
        Finding(FindingKind.AUDIT, "audit.log", problem, path=str(path))
        for problem in check.problems
    )


#: A pause longer than this between two recorded segments is reported as a time gap.
TIME_GAP_NS = 1_000_000_000


def time_gaps(headers: list[fmt.SegmentHeader]) -> list[tuple[int, float]]:
    """Pure: the pauses between consecutive segments (in sequence order) longer than
    :data:`TIME_GAP_NS`, as (wall-clock end of the earlier segment, seconds)."""
    out = []
    for prev, seg in itertools.pairwise(headers):
        pause = seg.start_wall_ns - prev.end_wall_ns
        if pause > TIME_GAP_NS:
            out.append((prev.end_wall_ns, pause / 1e9))
    return out


def _load_gaps(
    root: Path,
    camera: str,
    public_key: ed25519.Ed25519PublicKey,
    device_id: str | None,
    report: VerifyReport,
) -> dict[int, fmt.GapRecord]:
    out: dict[int, fmt.GapRecord] = {}
    for path in layout.gap_files(root, camera):
        try:
            gap = fmt.verify_gap(path.read_bytes(), public_key)
            m = layout.GAP_RE.match(path.name)
            if (
                gap.camera_id != camera
                or (device_id is not None and gap.device_id != device_id)
                or m is None
                or (int(m.group(1)), int(m.group(2))) != (gap.first, gap.last)
            ):
                raise IntegrityError("gap record does not match its place, camera or unit")
        except (IntegrityError, OSError) as exc:
            report.findings.append(Finding(FindingKind.ALTERED, camera, str(exc), path=str(path)))
            continue
        out[gap.first] = gap
    return out


def _gap_finding(gap: fmt.GapRecord, note: str = "") -> Finding:
    when = datetime.fromtimestamp(gap.created_wall_ns / 1e9, tz=UTC).isoformat(timespec="seconds")
    return Finding(
        FindingKind.GAP,
        gap.camera_id,
        f"{gap.describe()}; signed gap record written at start-up {when}{note}",
        gap.first,
    )


def _verify_envelopes(
    root: Path, camera: str, public_key: ed25519.Ed25519PublicKey, report: VerifyReport
) -> set[bytes]:
    good: set[bytes] = set()
    base = root / "epochs" / camera
    for entry in sorted(base.glob("*/*.env")) if base.is_dir() else []:
        try:
            env = fmt.verify_envelope(entry.read_bytes(), public_key)
        except (IntegrityError, OSError) as exc:
            report.findings.append(Finding(FindingKind.ENVELOPE, camera, str(exc), path=str(entry)))
            continue
        good.add(env.epoch_id)
        report.envelopes_ok += 1
    return good


def _check_receipts(
    root: Path,
    camera: str,
    by_seq: dict[int, list[tuple[_Verified, Path]]],
    key: ed25519.Ed25519PublicKey,
    device_id: str | None,
    summary: CameraSummary,
    report: VerifyReport,
) -> None:
    """The receipts of the days the checked segments start on: each must be the CSU's, for
    this unit and camera, and name the very bytes held under its sequence. A rewrite by
    someone holding the unit's key (which the chain alone cannot show) contradicts them."""
    days = {rcpt.day_of(copies[0][0].header.start_wall_ns) for copies in by_seq.values()}
    for raw in rcpt.ReceiptLog(root).read(camera, days):
        try:
            unit = device_id if device_id is not None else rcpt.parse_receipt(raw).device_id
            receipt = rcpt.verify_receipt(raw, key, device_id=unit, camera_id=camera)
        except IntegrityError as exc:
            report.findings.append(Finding(FindingKind.RECEIPT, camera, str(exc)))
            continue
        held = by_seq.get(receipt.sequence)
        if held is not None and held[0][0].chain_hash != receipt.chain_hash:
            when = datetime.fromtimestamp(receipt.csu_time_ns / 1e9, UTC)
            report.findings.append(
                Finding(
                    FindingKind.RECEIPT,
                    camera,
                    f"the CSU receipted other bytes under this sequence at "
                    f"{when:%Y-%m-%d %H:%M:%S} UTC: the recording was rewritten after the receipt",
                    receipt.sequence,
                    str(held[0][1]),
                )
            )
            continue
        summary.receipts_ok += 1
        if summary.receipted_through is None or receipt.sequence > summary.receipted_through:
            summary.receipted_through = receipt.sequence


def _check_chain(
    camera: str,
    by_seq: dict[int, list[tuple[_Verified, Path]]],
    ckp: fmt.Checkpoint | None,
    envelopes: set[bytes],
    ranged: bool,
    index_tail: int | None,
    summary: CameraSummary,
    report: VerifyReport,
    gaps: dict[int, fmt.GapRecord] | None = None,
) -> None:
    gaps = gaps or {}
    used: set[int] = set()

    def bridge(expected: int, want: bytes) -> tuple[int, bytes]:
        """Through the gap records that continue the chain here: each one is reported."""
        nxt = chain.through_gaps(gaps, expected, want, stop=used)
        for gap in nxt.crossed:
            used.add(gap.first)
            report.findings.append(_gap_finding(gap))
            summary.lost.append((gap.first, gap.last))
        return nxt.sequence, nxt.prev_hash

    purged_through = ckp.purged_through if ckp else -1
    prev: _Verified | None = None
    expected = purged_through + 1
    start_hash = ckp.last_hash if ckp else fmt.ZERO_HASH
    if not ranged:
        expected, start_hash = bridge(expected, start_hash)
    for seq in sorted(by_seq):
        copies = by_seq[seq]
        if len(copies) > 1:
            report.findings.append(
                Finding(
                    FindingKind.DUPLICATE,
                    camera,
                    f"{len(copies)} files carry this sequence",
                    seq,
                    ", ".join(str(p) for _, p in copies),
                )
            )
        seg, path = copies[0]
        if seq <= purged_through:
            report.findings.append(
                Finding(
                    FindingKind.CHECKPOINT,
                    camera,
                    "segment still present although the checkpoint says it was purged",
                    seq,
                    str(path),
                )
            )
            continue
        if prev is None:
            if ranged:
                # A loss recorded just before the first segment of the range is named too.
                for gap in list(gaps.values()):
                    if gap.last == seq - 1 and gap.chain_hash == seg.header.prev_hash:
                        bridge(gap.first, gap.prev_hash)
            if seq > expected and not ranged:
                report.findings.append(
                    Finding(
                        FindingKind.MISSING,
                        camera,
                        f"sequences {expected}..{seq - 1} missing (not purged by retention)",
                        expected,
                    )
                )
            elif seq == expected:
                want = start_hash
                if seg.header.prev_hash != want:
                    what = "the retention checkpoint" if ckp else "the start of the chain"
                    report.findings.append(
                        Finding(
                            FindingKind.CHAIN, camera, f"does not continue {what}", seq, str(path)
                        )
                    )
        else:
            pseq = prev.header.sequence
            nxt, want = bridge(pseq + 1, prev.chain_hash)
            if seq != nxt:
                report.findings.append(
                    Finding(
                        FindingKind.MISSING,
                        camera,
                        f"sequences {nxt}..{seq - 1} missing (not purged by retention)",
                        nxt,
                    )
                )
            elif seg.header.prev_hash != want:
                report.findings.append(
                    Finding(
                        FindingKind.CHAIN,
                        camera,
                        "previous-hash does not match the segment before it (replaced, reordered)",
                        seq,
                        str(path),
                    )
                )
        if seg.header.epoch_id not in envelopes:
            report.findings.append(
                Finding(
                    FindingKind.ENVELOPE,
                    camera,
                    f"epoch envelope {seg.header.epoch_id.hex()} missing or invalid: "
                    "this segment cannot be opened",
                    seq,
                    str(path),
                )
            )
        summary.segments_ok += 1
        summary.first = seq if summary.first is None else summary.first
        summary.last = seq
        prev = seg
    if prev is not None:
        bridge(prev.header.sequence + 1, prev.chain_hash)
    if not ranged:
        for gap in sorted(gaps.values(), key=lambda g: g.first):
            if gap.first not in used and gap.last > purged_through:
                report.findings.append(_gap_finding(gap, " (not on the chain)"))
                summary.lost.append((gap.first, gap.last))
    if index_tail is not None and (summary.last is None or summary.last < index_tail):
        start = (summary.last + 1) if summary.last is not None else purged_through + 1
        if index_tail >= start:
            report.findings.append(
                Finding(
                    FindingKind.MISSING,
                    camera,
                    f"sequences {start}..{index_tail} are in the index but not on disk",
                    start,
                )
            )


class ChainVerifier:
    """Checks sealed segments arriving one by one (the CSU receiver's side).

    Per camera, each segment must carry a valid signature, the next sequence and the hash of
    the previous one. A signed checkpoint may move the expected position forward (retention
    purged segments the receiver never got).
    """

    def __init__(self, public_key: ed25519.Ed25519PublicKey, device_id: str | None = None) -> None:
        self.public_key = public_key
        self.device_id = device_id
        self._state: dict[str, tuple[int, bytes]] = {}

    def position(self, camera: str) -> tuple[int, bytes] | None:
        """(next expected sequence, previous hash), once the camera's start is known."""
        return self._state.get(camera)

    def resume(self, camera: str, next_sequence: int, prev_hash: bytes) -> None:
        self._state[camera] = (next_sequence, prev_hash)

    def accept_checkpoint(self, raw: bytes) -> fmt.Checkpoint:
        ckp = fmt.verify_checkpoint(raw, self.public_key)
        current = self._state.get(ckp.camera_id)
        if current is None or current[0] <= ckp.purged_through + 1:
            self._state[ckp.camera_id] = (ckp.purged_through + 1, ckp.last_hash)
        return ckp

    def accept_gap(self, raw: bytes) -> fmt.GapRecord:
        """A signed gap record: the chain goes on through it (the loss is the caller's to
        report)."""
        gap = fmt.verify_gap(raw, self.public_key)
        if self.device_id is not None and gap.device_id != self.device_id:
            raise IntegrityError(f"gap record of {gap.device_id!r}, expected {self.device_id!r}")
        state = self._state.get(gap.camera_id)
        if state is not None and (state[0] != gap.first or state[1] != gap.prev_hash):
            raise IntegrityError(
                f"gap record {gap.camera_id}#{gap.first}..{gap.last} does not continue the chain"
            )
        self._state[gap.camera_id] = (gap.last + 1, gap.chain_hash)
        return gap

    def accept(self, raw: bytes) -> fmt.SealedSegment:
        seg = fmt.verify_segment(raw, self.public_key, device_id=self.device_id)
        h = seg.header
        state = self._state.get(h.camera_id)
        if state is None:
            state = (0, fmt.ZERO_HASH) if h.sequence == 0 else (h.sequence, h.prev_hash)
        expected, prev_hash = state
        if h.sequence < expected:
            raise IntegrityError(f"segment {h.camera_id}#{h.sequence}: duplicate or replayed")
        if h.sequence > expected:
            raise IntegrityError(
                f"segment {h.camera_id}#{h.sequence}: sequences {expected}..{h.sequence - 1} "
                "missing"
            )
        if h.prev_hash != prev_hash:
            raise IntegrityError(f"segment {h.camera_id}#{h.sequence}: chain broken")
        self._state[h.camera_id] = (h.sequence + 1, seg.chain_hash)
        return seg


def self_check(vault: Vault) -> str:
    """``edgectl selftest`` check of the vault: the last hour verifies, retention is on time.

    Raises :class:`IntegrityError` or :class:`VaultError` naming the problem; returns a one-line
    summary otherwise (counts and ages only, never content).
    """
    now = vault.clock()
    report = verify_vault(
        vault.root,
        vault.public_key,
        device_id=vault.device_id,
        start_ns=now - 3_600_000_000_000,
        end_ns=now + 60_000_000_000,
        audit=False,  # the whole log takes long once years old: edgectl verify checks it
    )
    if not report.ok:
        raise IntegrityError("; ".join(str(f) for f in report.findings[:3]))
    oldest = next(iter(vault.index.oldest_first(batch=1)), None)
    limit_ns = vault.policy.retention_days * 86_400_000_000_000
    age_days = (now - oldest.end_wall_ns) / 86_400e9 if oldest else 0.0
    if oldest is not None and now - oldest.end_wall_ns > limit_ns + 3_600_000_000_000:
        raise VaultError(
            f"retention late: a segment ended {age_days:.1f} days ago "
            f"(limit {vault.policy.retention_days} days)"
        )
    usage = vault.usage()
    free = 100.0 * usage.free_bytes / usage.total_bytes if usage.total_bytes else 0.0
    backlog = vault.backlog()
    verified = sum(c.segments_ok for c in report.cameras.values())
    return (
        f"{verified} segment(s) of the last hour verified; oldest recording {age_days:.1f} d "
        f"(limit {vault.policy.retention_days} d); {free:.0f} % free; "
        f"{backlog.segments} segment(s) ({backlog.seconds:.0f} s) not yet at the CSU"
    )

"""Start-up is recovery: make the index and the files agree again after any crash.

Steps, each cheap enough for an index of 1.3 million rows (nothing scans the whole vault):

1. empty ``tmp/`` (a segment being written when the power went: it was never acknowledged);
2. per camera, finish an interrupted purge (rows at or below the signed checkpoint go);
3. check the index's tail against the files (file present, signature valid, same hash);
   rows whose file is missing or bad are dropped (bad files are moved to ``quarantine/``);
4. re-index files past the tail that a crash left unindexed, each verified against the
   chain (signature, consecutive sequence, previous hash) — a file that does not continue the
   chain is never accepted;
5. set each camera's next sequence and chain hash.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import IntegrityError, VaultError
from ..unitkeys import fsync_dir
from . import format as fmt
from . import layout
from .index import Index, IndexRow

if TYPE_CHECKING:
    from .store import Vault

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    temp_removed: int = 0
    reindexed: int = 0
    dropped_rows: int = 0
    quarantined: int = 0
    purges_finished: int = 0
    rebuilt: bool = False
    index_replaced: bool = False
    """The index file could not be opened: it was quarantined and rebuilt from the files."""
    cameras: dict[str, int] = field(default_factory=dict)
    """camera -> next sequence."""
    gaps: list[fmt.GapRecord] = field(default_factory=list)
    """Losses found at this start, each now a signed gap record in its camera's chain."""


#: Written by :meth:`Vault.close`, removed at start: its absence means the last run crashed.
CLEAN_MARK = "clean-shutdown"


def open_index(vault: Vault) -> tuple[Index, bool]:
    """The index; an unusable one is moved to quarantine and a new one built from the files."""
    path = vault.root / "index.sqlite"
    clean = vault.root / CLEAN_MARK
    was_clean = clean.exists()
    if was_clean:
        clean.unlink()
        fsync_dir(vault.root)
    try:
        index = Index(path)
        # The integrity check reads every page (0.5 s for 1.3 M rows on a PC): only after a
        # crash or power cut, not after a clean stop.
        if was_clean or index.quick_check():
            return index, False
        index.close()
        reason = "index fails its integrity check"
    except VaultError as exc:
        reason = str(exc)
    for suffix in ("", "-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            vault.quarantine(side, reason)
    # A fresh index is empty: recovery re-indexes every file, checking the chain as it goes.
    return Index(path), True


def recover(vault: Vault) -> RecoveryReport:
    report = RecoveryReport()
    for tmp in (vault.root / "tmp").iterdir():
        tmp.unlink(missing_ok=True)
        report.temp_removed += 1
    try:
        cameras = sorted(set(vault.index.cameras()) | set(layout.camera_ids(vault.root)))
        for camera in cameras:
            _recover_camera(vault, camera, report)
    except (sqlite3.DatabaseError, IntegrityError) as exc:
        log.error("index unusable (%s): rebuilding it from the files", exc)
        rebuild_index(vault)
        report.rebuilt = True
        for camera in layout.camera_ids(vault.root):
            _recover_camera(vault, camera, report)
    for gap in report.gaps:
        log.error(
            "%s: sequences %d..%d were issued and are lost (files missing or damaged): "
            "recorded as a signed gap; they are never issued again",
            gap.camera_id,
            gap.first,
            gap.last,
        )
    if report.temp_removed or report.reindexed or report.dropped_rows or report.quarantined:
        log.warning(
            "recovery: %d partial file(s) removed, %d segment(s) re-indexed, %d stale row(s) "
            "dropped, %d file(s) quarantined",
            report.temp_removed,
            report.reindexed,
            report.dropped_rows,
            report.quarantined,
        )
    details = {
        "partial_files_removed": report.temp_removed,
        "reindexed": report.reindexed,
        "dropped_rows": report.dropped_rows,
        "quarantined": report.quarantined,
        "index_rebuilt": report.rebuilt,
        "gaps": [{"camera": g.camera_id, "first": g.first, "last": g.last} for g in report.gaps],
    }
    try:
        vault.audit.append("vault-open", details, actor="edged")
    except (OSError, VaultError) as exc:  # recording matters more than this record
        log.error("audit log not writable (%s): vault-open %s not recorded", exc, details)
    return report


def _recover_camera(vault: Vault, camera: str, report: RecoveryReport) -> None:
    index, root = vault.index, vault.root
    index_was_empty = index.first(camera) is None and not index.has_epochs(camera)
    try:
        ckp = vault.load_checkpoint(camera)
    except IntegrityError as exc:
        vault.quarantine(layout.checkpoint_path(root, camera), str(exc))
        report.quarantined += 1
        ckp = None
    # Every sequence below this was issued at some time: the next one is never lower, whatever
    # is lost (index rows, the newest files, both).
    issued = vault.high_water(camera)
    if ckp is not None:
        issued = max(issued, ckp.purged_through + 1)
        vault.purge_gaps(camera, ckp.purged_through)
        stale = index.delete_through(camera, ckp.purged_through)
        for row in stale:
            vault._unlink(vault.path_of(row))
        report.purges_finished += len(stale)
        # Files of an interrupted purge whose rows were already gone: only the oldest hours
        # can hold them, so stop at the first file past the checkpoint.
        for _day, _hour, hdir in layout.hour_dirs(root, camera):
            beyond = False
            for entry in sorted(hdir.iterdir()):
                m = layout.SEGMENT_RE.match(entry.name)
                if m and int(m.group(2)) <= ckp.purged_through:
                    vault._unlink(entry)
                    report.purges_finished += 1
                elif m:
                    beyond = True
            if beyond:
                break
    # Tail: the newest rows must match their files.
    while True:
        rows = index.last(camera)
        if not rows:
            break
        row = rows[0]
        path = vault.path_of(row)
        try:
            raw = path.read_bytes()
            seg = fmt.verify_segment(raw, vault.public_key, device_id=vault.device_id)
            if seg.chain_hash != row.chain_hash or seg.header.sequence != row.sequence:
                raise IntegrityError("file differs from its index row")
            break
        except FileNotFoundError:
            log.error("%s: indexed segment missing; dropping its row", path)
        except IntegrityError as exc:
            vault.quarantine(path, str(exc))
            report.quarantined += 1
        index.delete(camera, row.sequence)
        issued = max(issued, row.sequence + 1)
        report.dropped_rows += 1
    rows = index.last(camera)
    after_ns = 0
    if rows:
        seq, last_hash, since = rows[0].sequence, rows[0].chain_hash, rows[0].start_wall_ns
        after_ns = rows[0].end_wall_ns
    elif ckp is not None:
        seq, last_hash, since = ckp.purged_through, ckp.last_hash, None
    else:
        seq, last_hash, since = -1, fmt.ZERO_HASH, None
    gaps = vault.load_gaps(camera)
    for gap in gaps.values():  # a rebuilt index learns them again (the CSU deduplicates)
        index.add_gap(camera, gap.first, gap.last)

    def bridge(seq: int, last_hash: bytes, after_ns: int) -> tuple[int, bytes, int]:
        """Past the gap records that continue the chain at this point."""
        while (gap := gaps.get(seq + 1)) is not None and gap.prev_hash == last_hash:
            seq, last_hash, after_ns = gap.last, gap.chain_hash, gap.created_wall_ns
        return seq, last_hash, after_ns

    seq, last_hash, after_ns = bridge(seq, last_hash, after_ns)
    # Files past the tail (written, renamed into place, not yet indexed when the crash came).
    start_hour = layout.hour_of(since) if since is not None else ("", "")
    later: list[tuple[int, Path]] = []
    for day, hour, hdir in layout.hour_dirs(root, camera):
        if (day, hour) < start_hour:
            continue
        for entry in hdir.iterdir():
            m = layout.SEGMENT_RE.match(entry.name)
            if m and int(m.group(2)) > seq:
                later.append((int(m.group(2)), entry))
    later.sort()
    for n, (file_seq, path) in enumerate(later):
        try:
            raw = path.read_bytes()
            seg = fmt.verify_segment(
                raw, vault.public_key, prev_hash=last_hash, device_id=vault.device_id
            )
            h = seg.header
            if h.sequence != seq + 1 or file_seq != h.sequence or h.camera_id != camera:
                raise IntegrityError(f"sequence {h.sequence} does not follow {seq}")
            if path != layout.segment_path(root, camera, h.start_wall_ns, h.sequence):
                raise IntegrityError("file name does not match its header")
        except IntegrityError as exc:
            # The chain cannot go on from here: nothing after this point can be accepted.
            for rest_seq, rest in later[n:]:
                vault.quarantine(rest, f"not accepted at recovery: {exc}")
                issued = max(issued, rest_seq + 1)
                report.quarantined += 1
            break
        index.insert(IndexRow.of_segment(camera, seg, len(raw)))
        seq, last_hash, after_ns = bridge(h.sequence, seg.chain_hash, h.end_wall_ns)
        report.reindexed += 1
    _index_envelopes(vault, camera, every_day=index_was_empty)
    if issued > seq + 1:
        # Issued once, gone now: a signed record takes their place in the chain, and the
        # next segment continues from it. Never reissued, never silently forgotten.
        gap = vault.record_gap(
            camera,
            seq + 1,
            issued - 1,
            last_hash,
            after_ns,
            "newest segments missing or damaged at start-up",
        )
        report.gaps.append(gap)
        seq, last_hash = gap.last, gap.chain_hash
    if vault.high_water(camera) < seq + 1:
        vault._write_high_water(camera, seq + 1)
    lane = vault.lane(camera)
    lane.next_seq, lane.last_hash = seq + 1, last_hash
    report.cameras[camera] = seq + 1


def _index_envelopes(vault: Vault, camera: str, *, every_day: bool) -> None:
    """Index envelope files that lack a row: after a crash only the newest day can hold one;
    with a new, empty index every day is read."""
    base = vault.root / "epochs" / camera
    if not base.is_dir():
        return
    days = sorted(p for p in base.iterdir() if layout.DAY_RE.match(p.name))
    for day in days if every_day else days[-1:]:
        for entry in day.iterdir():
            m = layout.ENVELOPE_RE.match(entry.name)
            if not m:
                continue
            epoch_id = bytes.fromhex(m.group(2))
            if vault.index.epoch_created(camera, epoch_id) is not None:
                continue
            try:
                env = fmt.verify_envelope(entry.read_bytes(), vault.public_key)
            except IntegrityError as exc:
                vault.quarantine(entry, str(exc))
                continue
            vault.index.add_epoch(camera, epoch_id, env.created_wall_ns, entry.stat().st_size)


def rebuild_index(vault: Vault) -> int:
    """Rebuild the index from the files alone (signatures checked, chains not required)."""
    index, root = vault.index, vault.root
    index.clear()
    count = 0
    for camera in layout.camera_ids(root):
        rows: list[IndexRow] = []
        for _day, _hour, hdir in layout.hour_dirs(root, camera):
            for entry in sorted(hdir.iterdir()):
                if not layout.SEGMENT_RE.match(entry.name):
                    continue
                try:
                    raw = entry.read_bytes()
                    seg = fmt.verify_segment(raw, vault.public_key)
                except IntegrityError as exc:
                    vault.quarantine(entry, str(exc))
                    continue
                rows.append(IndexRow.of_segment(camera, seg, len(raw)))
        index.insert_many(rows)
        count += len(rows)
        base = root / "epochs" / camera
        for entry in sorted(base.glob("*/*.env")) if base.is_dir() else []:
            try:
                env = fmt.verify_envelope(entry.read_bytes(), vault.public_key)
            except IntegrityError as exc:
                vault.quarantine(entry, str(exc))
                continue
            index.add_epoch(camera, env.epoch_id, env.created_wall_ns, entry.stat().st_size)
    log.warning("index rebuilt from the files: %d segment(s)", count)
    return count

"""The vault: an encrypted, signed, hash-chained ring buffer of sealed segments on disk.

Threading (several cameras write at once, retention runs from its own thread, the uplink
reads the outbox from another):

* each camera has a :class:`_Lane` whose ``lock`` is held by that camera's recording thread
  for the whole of :meth:`Vault.write` (sequence, chain hash and epoch key are per camera, so
  cameras never wait for each other);
* ``_purge_lock`` lets one purge run at a time; a purge never takes a lane lock (a writer
  that hits a full disk purges while holding its own lane lock, so that would deadlock) and
  only removes the *head* of each chain, while writers only append to the *tail*;
* ``_live_lock`` is held while a lane switches epoch (envelope written and indexed, key
  swapped) and while a purge decides which envelopes are unused, so a purge never removes
  the envelope of a live epoch; no other lock is taken while it is held;
* the index has its own lock (see :mod:`edge.vault.index`);
* a damaged index met while running (:class:`IndexCorruptError`) is replaced under
  ``_purge_lock`` (so no purge reads it half rebuilt): quarantined, rebuilt from the sealed
  files, and the call that met it is tried again. Callers never hold ``_live_lock`` or
  ``_purge_lock`` when they ask for it; ``Index.generation`` tells a second thread that met
  the same damage that the index was already replaced.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key
from edge.vault.recipient_keys import EpochKey, RecipientPublic, resolve_recipients

from ..config import EdgeConfig, VaultConfig
from ..errors import EdgeError, IndexCorruptError, IntegrityError, VaultError
from ..video.base import MediaSegment, SegmentSink
from . import eventlog, files, layout
from . import format as fmt
from .audit import AuditLog
from .base import Backlog, Outbox, OutboxItem
from .index import IndexRow
from .outbox import outbox_items
from .receipt import ReceiptLog
from .receipt import day_of as receipt_day
from .retention import DiskUsage, PurgePlan, RetentionPolicy, bytes_to_free, plan_purge

if TYPE_CHECKING:
    from ..events import SignedEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

_FULL = (errno.ENOSPC, errno.EDQUOT)
_DAY_NS = 86_400 * 10**9
#: Space kept aside so that a purge on a completely full disk can write its checkpoint first.
RESERVE_BYTES = 256 * 1024


@dataclass
class _Lane:
    camera_id: str
    next_seq: int = 0
    last_hash: bytes = fmt.ZERO_HASH
    epoch: EpochKey | None = None
    epoch_started: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Vault(SegmentSink, Outbox):
    def __init__(
        self,
        root: Path,
        *,
        device_id: str,
        signing_key: ed25519.Ed25519PrivateKey,
        recipients: list[RecipientPublic],
        policy: RetentionPolicy,
        epoch_seconds: float = 600.0,
        clock: Callable[[], int] = time.time_ns,
        disk_usage: Callable[[], tuple[int, int]] | None = None,
        purge_interval_s: float | None = None,
    ) -> None:
        if not recipients:
            raise VaultError("no recipient key: refusing to record")
        # Absolute once: recovery lists directories and compares what it finds with the
        # paths it computes from this root (a relative root doubled them, issue #11 item 7).
        self.root = root = Path(os.path.abspath(root))
        self.device_id = device_id
        self._key = signing_key
        self.public_key = signing_key.public_key()
        self.recipients = recipients
        self.policy = policy
        self.epoch_seconds = epoch_seconds
        self.clock = clock
        self._disk_usage = disk_usage or self._statvfs
        self._lanes: dict[str, _Lane] = {}
        self._lanes_lock = threading.Lock()  # protects the dict, not the lanes
        self._purge_lock = threading.Lock()
        self._live_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for sub in ("tmp", "segments", "epochs", "checkpoints", "quarantine", "gaps", "sequences"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog(root / "audit.log", device_id, signing_key)
        self.receipts = ReceiptLog(root)
        from .recovery import open_index, recover  # local: recovery uses this module's types

        self.index, index_lost = open_index(self)
        self.recovery = recover(self)
        self.recovery.index_replaced = index_lost
        self._ensure_reserve()
        if purge_interval_s is not None:
            self._thread = threading.Thread(
                target=self._retention_loop, args=(purge_interval_s,), name="vault-retention"
            )
            self._thread.daemon = True
            self._thread.start()

    @classmethod
    def from_config(cls, cfg: EdgeConfig, *, background: bool = True) -> Vault:
        data = cfg.unit.data_dir
        recipients = resolve_recipients(cfg)
        v = cfg.vault
        return cls(
            layout.vault_dir(data),
            device_id=cfg.unit.id,
            signing_key=load_or_create_signing_key(keys_dir_of(data)),
            recipients=recipients,
            policy=RetentionPolicy(v.retention_days, v.max_bytes, v.min_free_percent),
            epoch_seconds=v.epoch_seconds,
            purge_interval_s=v.purge_interval_s if background else None,
        )

    def apply_config(self, v: VaultConfig) -> None:
        """Retention and epoch settings from a reloaded configuration (SIGHUP).

        Recipients are not changed here: a new CSU key takes effect at the next start, when a
        new epoch key is drawn anyway.
        """
        self.policy = RetentionPolicy(v.retention_days, v.max_bytes, v.min_free_percent)
        self.epoch_seconds = v.epoch_seconds
        log.info(
            "vault settings: retention %d days, max %d bytes, min free %.0f %%, epochs %d s",
            v.retention_days,
            v.max_bytes,
            v.min_free_percent,
            v.epoch_seconds,
        )

    # --- lanes ---------------------------------------------------------------------------------

    def lane(self, camera_id: str) -> _Lane:
        with self._lanes_lock:
            lane = self._lanes.get(camera_id)
            if lane is None:
                lane = self._lanes[camera_id] = _Lane(camera_id)
            return lane

    def _rotate(self, lane: _Lane) -> None:
        """Draw a new epoch key, seal it to the recipients, forget the old one."""
        key = EpochKey()
        now = self.clock()
        env = fmt.EpochEnvelope(
            self.device_id,
            lane.camera_id,
            key.epoch_id,
            now,
            tuple(
                key.seal_to(
                    self.recipients, fmt.hpke_info(self.device_id, lane.camera_id, key.epoch_id)
                )
            ),
        )
        raw = fmt.sign_envelope(env, self._key)
        path = layout.envelope_path(self.root, lane.camera_id, now, key.epoch_id)
        generation = self.index.generation
        broken: IndexCorruptError | None = None
        with self._live_lock:
            self._write_file(path, raw)
            try:
                self.index.add_epoch(lane.camera_id, key.epoch_id, now, len(raw))
            except IndexCorruptError as exc:
                broken = exc  # replaced below, outside _live_lock (purges take it)
            old, lane.epoch = lane.epoch, key
        if broken is not None:
            self.replace_index(generation, broken)  # re-reads the envelope just written
        lane.epoch_started = time.monotonic()
        if old is not None:
            old.wipe()
        log.info("%s: new epoch %s", lane.camera_id, key.epoch_id.hex()[:8])

    # --- writing -------------------------------------------------------------------------------

    def write(self, segment: MediaSegment) -> None:
        lane = self.lane(segment.camera_id)
        with lane.lock:
            if lane.epoch is None or time.monotonic() - lane.epoch_started >= self.epoch_seconds:
                self._with_space(lambda: self._rotate(lane), 4096)
            epoch = lane.epoch
            assert epoch is not None
            payload = segment.init + segment.media
            nonce = epoch.next_nonce()
            header = fmt.SegmentHeader(
                device_id=self.device_id,
                camera_id=segment.camera_id,
                sequence=lane.next_seq,
                start_wall_ns=segment.start_wall_ns,
                end_wall_ns=max(segment.end_wall_ns, segment.start_wall_ns),
                frame_count=segment.frame_count,
                first_frame_index=segment.first_frame_index,
                epoch_id=epoch.epoch_id,
                nonce=nonce,
                prev_hash=lane.last_hash,
                init_len=len(segment.init),
                ciphertext_len=len(payload) + fmt.TAG_LEN,
                masks=segment.masks,
            )
            ciphertext = epoch.encrypt(nonce, payload, header.pack())
            raw = fmt.sign_segment(header, ciphertext, self._key)
            path = layout.segment_path(
                self.root, segment.camera_id, header.start_wall_ns, header.sequence
            )
            self._with_space(lambda: self._write_file(path, raw), len(raw))
            digest = fmt.sha256(raw)
            row = IndexRow(
                segment.camera_id,
                header.sequence,
                header.start_wall_ns,
                header.end_wall_ns,
                header.frame_count,
                len(raw),
                epoch.epoch_id,
                digest,
            )
            try:
                self._with_space(lambda: self._indexed(lambda: self.index.insert(row)), 65536)
            except VaultError:
                # Not acknowledged, so not kept: the next write reuses this sequence.
                self._unlink(path)
                raise
            lane.next_seq += 1
            lane.last_hash = digest
            # Durable before write() returns: whatever happens to the index and the newest
            # files later, recovery never issues this sequence again.
            try:
                self._with_space(
                    lambda: self._write_high_water(lane.camera_id, lane.next_seq), 4096
                )
            except VaultError as exc:
                # The segment is stored and indexed (the index still knows its sequence):
                # recording goes on, the weaker guarantee is said loudly.
                log.error("%s: sequence high-water mark not written: %s", lane.camera_id, exc)
        if bytes_to_free(self.policy, self.usage()) > 0:
            self.purge(reason="space")

    def record_event(self, event: SignedEvent) -> None:
        """Keep a signed event, and its snapshot sealed to the recipients, as evidence (an
        :class:`edge.app.alerts.AlertHub` listener: any thread). A full disk purges the oldest
        recordings as a segment write does; a failure is logged, never raised: the event still
        goes to the CSU and MQTT."""
        try:
            written = eventlog.files_of(
                self.root,
                event,
                device_id=self.device_id,
                recipients=self.recipients,
                signing_key=self._key,
            )
            for path, data in written:
                self._with_space(functools.partial(self._write_event_file, path, data), len(data))
        except (OSError, EdgeError) as exc:
            log.error("event %s (%s) not kept in the vault: %s", event.kind, event.camera, exc)

    def _write_event_file(self, path: Path, data: bytes) -> None:
        try:
            self._write_file(path, data)
        except FileNotFoundError:
            # A purge removed the hour's directory, empty, between its creation and the rename
            # (a space purge can reach recent hours): once more, the directory made again.
            self._write_file(path, data)

    def _indexed(self, action: Callable[[], T]) -> T:
        """Run an index operation; on a damaged index replace it and run it once more."""
        generation = self.index.generation
        try:
            return action()
        except IndexCorruptError as exc:
            self.replace_index(generation, exc)
        return action()

    def replace_index(self, generation: int, exc: IndexCorruptError) -> None:
        """The index broke while running: quarantine it, rebuild it from the sealed files
        (as recovery does at start), record that in the audit log; recording goes on.

        ``generation`` is the index's generation when the caller met the damage: if another
        thread replaced it since, there is nothing left to do.
        """
        from .recovery import rebuild_index  # local: recovery uses this module's types

        with self._purge_lock:
            if self.index.generation != generation:
                return
            log.error("vault index damaged while recording (%s): rebuilding it", exc)
            self.index.replace(lambda side: self.quarantine(side, str(exc)))
            count = rebuild_index(self)
            self._vault_bytes = self.index.total_bytes()
        details = {"reason": str(exc), "segments": count}
        try:
            self.audit.append("index-rebuilt", details, actor="edged")
        except (OSError, VaultError) as err:  # recording matters more than this record
            log.error("audit log not writable (%s): index-rebuilt %s not recorded", err, details)

    def _with_space(self, action: Callable[[], None], size: int) -> None:
        """Run a write; on a full disk purge the oldest recordings and try again."""
        for _attempt in range(4):
            try:
                action()
                return
            except OSError as exc:
                if exc.errno not in _FULL:
                    raise VaultError(f"vault write failed: {exc}") from None
            plan = self.purge(reason="disk full", extra_needed=2 * size + (1 << 20))
            if plan.count == 0:
                break
        raise VaultError("disk full and nothing left to purge: segment lost")

    def _write_file(self, final: Path, data: bytes) -> None:
        files.write_durably(self.root / "tmp", final, data)

    # --- sequence high-water mark and gap records ---------------------------------------------

    def high_water(self, camera: str) -> int:
        """The next sequence never issued for ``camera`` as last written (0 when unknown)."""
        path = layout.high_water_path(self.root, camera)
        try:
            return max(0, int(path.read_text(encoding="ascii").strip()))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            # Recovery still raises it from the index and the files; never trust it lower.
            log.error("%s: unreadable sequence high-water mark (%s)", path, exc)
            return 0

    def _write_high_water(self, camera: str, next_seq: int) -> None:
        self._write_file(layout.high_water_path(self.root, camera), f"{next_seq}\n".encode())

    def load_gaps(self, camera: str) -> dict[int, fmt.GapRecord]:
        """The camera's gap records by first lost sequence; altered ones go to quarantine."""
        out: dict[int, fmt.GapRecord] = {}
        for path in layout.gap_files(self.root, camera):
            try:
                gap = fmt.verify_gap(path.read_bytes(), self.public_key)
                if gap.camera_id != camera or gap.device_id != self.device_id:
                    raise VaultError("gap record of another camera or unit")
            except (VaultError, OSError) as exc:
                self.quarantine(path, str(exc))
                continue
            out[gap.first] = gap
        return out

    def record_gap(
        self, camera: str, first: int, last: int, prev_hash: bytes, after_ns: int, reason: str
    ) -> fmt.GapRecord:
        """Write the signed record of sequences ``first..last`` lost; it joins the chain."""
        gap = fmt.GapRecord(
            self.device_id, camera, self.clock(), first, last, after_ns, prev_hash, reason
        )
        raw = fmt.sign_gap(gap, self._key)
        self._write_file(layout.gap_path(self.root, camera, first, last), raw)
        self.index.add_gap(camera, first, last)  # for the uplink: the CSU must know
        return fmt.parse_gap(raw)

    # --- retention -----------------------------------------------------------------------------

    def _ensure_reserve(self) -> None:
        """Keep ``RESERVE_BYTES`` allocated so that a purge can always write its checkpoint."""
        path = self.root / "reserve"
        try:
            if path.exists() and path.stat().st_size == RESERVE_BYTES:
                return
            self._write_file(path, bytes(RESERVE_BYTES))
        except OSError as exc:
            log.warning("cannot allocate the purge reserve yet: %s", exc.strerror)

    def _release_reserve(self) -> None:
        (self.root / "reserve").unlink(missing_ok=True)

    def _statvfs(self) -> tuple[int, int]:
        st = os.statvfs(self.root)
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    def usage(self) -> DiskUsage:
        total, free = self._disk_usage()
        # The index's running total, changed in the same transaction as the rows (writers,
        # the purge and the uplink all go through the index lock): no second counter that
        # updates under other locks could lose an update and make retention drift.
        return DiskUsage(total, free, self.index.total_bytes())

    def purge(self, *, reason: str = "periodic", extra_needed: int = 0) -> PurgePlan:
        """Apply retention now: by age, then by space, oldest first. Returns what was done."""
        return self._indexed(lambda: self._purge(reason, extra_needed))

    def _purge(self, reason: str, extra_needed: int) -> PurgePlan:
        with self._purge_lock:
            now = self.clock()
            plan = plan_purge(
                self.index.oldest_first(), self.policy, self.usage(), now, extra_needed=extra_needed
            )
            done: dict[str, Any] = {}
            # Events go with the recordings of their time: by age, and up to the end of the
            # last segment a space purge removed.
            event_cutoffs: dict[str, int] = {}
            for camera, through in sorted(plan.cutoffs.items()):
                last = self.index.get(camera, through)
                if last is not None:
                    event_cutoffs[camera] = last.end_wall_ns
                done[camera] = self._purge_camera(camera, through, now)
            purged_epochs = self._purge_epochs()
            purged_events = eventlog.purge(
                self.root, event_cutoffs, now - self.policy.retention_days * 86400 * 10**9
            )
            if purged_events:
                log.info("retention (%s): removed %d event file(s)", reason, purged_events)
            if plan.count:
                details = {
                    "reason": reason,
                    "by_age": plan.by_age,
                    "by_space": plan.by_space,
                    "bytes": plan.bytes,
                    "epochs": purged_epochs,
                    "event_files": purged_events,
                    "retention_days": self.policy.retention_days,
                    "cameras": done,
                }
                try:  # the space just freed makes room for the record
                    self.audit.append("purge", details, actor="edged")
                except (OSError, VaultError) as exc:
                    # The signed checkpoint still proves the purge; recording must go on.
                    log.error("purge not written to the audit log: %s (%s)", exc, details)
                log.info(
                    "retention (%s): purged %d segment(s) (%d by age, %d by space), %d bytes",
                    reason,
                    plan.count,
                    plan.by_age,
                    plan.by_space,
                    plan.bytes,
                )
            self._ensure_reserve()
            return plan

    def _purge_camera(self, camera: str, through: int, now: int) -> dict[str, int]:
        """Checkpoint first, then files, then rows: a crash anywhere is finished by recovery."""
        last = self.index.get(camera, through)
        if last is None:
            return {"through": through, "count": 0}
        prev_ckp = self.load_checkpoint(camera)
        ckp = fmt.Checkpoint(
            self.device_id,
            camera,
            now,
            through,
            last.chain_hash,
            (prev_ckp.purged_count if prev_ckp else 0)
            + through
            - (prev_ckp.purged_through if prev_ckp else -1),
            fmt.sha256(prev_ckp.raw) if prev_ckp else fmt.ZERO_HASH,
        )
        ckp_path, ckp_raw = (
            layout.checkpoint_path(self.root, camera),
            fmt.sign_checkpoint(ckp, self._key),
        )
        try:
            self._write_file(ckp_path, ckp_raw)
        except OSError as exc:
            if exc.errno not in _FULL:
                raise
            # The checkpoint must be durable before anything is deleted, and a full disk
            # has no room for it: this is what the reserve file is for.
            self._release_reserve()
            self._write_file(ckp_path, ckp_raw)
        rows = self.index.rows_through(camera, through)
        for row in rows:
            self._unlink(layout.segment_path(self.root, camera, row.start_wall_ns, row.sequence))
        self.purge_gaps(camera, through)
        self.index.delete_through(camera, through)
        # Receipts go by day: a day's file once no remaining segment starts on that day.
        first = self.index.first(camera)
        if first is not None:
            self.receipts.purge_before(camera, receipt_day(first.start_wall_ns))
        else:
            self.receipts.purge_before(camera, receipt_day(last.start_wall_ns + _DAY_NS))
        return {"through": through, "count": len(rows)}

    def _purge_epochs(self) -> int:
        count = 0
        with self._live_lock:
            live = {lane.epoch.epoch_id for lane in list(self._lanes.values()) if lane.epoch}
            for camera in self.index.cameras():
                for epoch_id, created in self.index.unused_epochs(camera, None):
                    if epoch_id in live:
                        continue
                    path = layout.envelope_path(self.root, camera, created, epoch_id)
                    self._unlink(path)
                    self.index.delete_epoch(camera, epoch_id)
                    count += 1
        return count

    def purge_gaps(self, camera: str, through: int) -> int:
        """Gap records wholly at or below a checkpoint go with the segments around them."""
        count = 0
        for path in layout.gap_files(self.root, camera):
            m = layout.GAP_RE.match(path.name)
            if m and int(m.group(2)) <= through:
                path.unlink(missing_ok=True)
                count += 1
        self.index.delete_gaps_through(camera, through)
        return count

    @staticmethod
    def _unlink(path: Path) -> None:
        files.unlink_pruning(path)

    def load_checkpoint(self, camera: str) -> fmt.Checkpoint | None:
        path = layout.checkpoint_path(self.root, camera)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        return fmt.verify_checkpoint(raw, self.public_key)

    def expire_idle_epochs(self) -> int:
        """Wipe epoch keys older than ``epoch_seconds`` on lanes that stopped writing (a camera
        that is down must not keep a key alive); the next write draws a new one."""
        with self._lanes_lock:
            lanes = list(self._lanes.values())
        wiped = 0
        for lane in lanes:
            if not lane.lock.acquire(blocking=False):
                continue  # writing right now: it rotates by itself when due
            try:
                age = time.monotonic() - lane.epoch_started
                if lane.epoch is not None and age >= self.epoch_seconds:
                    lane.epoch.wipe()
                    lane.epoch = None
                    wiped += 1
            finally:
                lane.lock.release()
        return wiped

    def _retention_loop(self, interval: float) -> None:
        while not self._stop.wait(max(0.05, min(interval, self.epoch_seconds))):
            try:
                self.expire_idle_epochs()
                self.purge()
            except Exception:  # the thread must survive anything; the next cycle retries
                log.exception("retention cycle failed")

    # --- reading -------------------------------------------------------------------------------

    def recorded_until_ns(self, camera_id: str) -> int | None:
        rows = self.index.last(camera_id)
        return rows[0].end_wall_ns if rows else None

    def find(self, start_ns: int, end_ns: int, camera: str | None = None) -> list[IndexRow]:
        return self._indexed(lambda: self.index.range(start_ns, end_ns, camera))

    def path_of(self, row: IndexRow) -> Path:
        return layout.segment_path(self.root, row.camera_id, row.start_wall_ns, row.sequence)

    def outbox(self, limit: int = 100) -> list[OutboxItem]:
        return self._indexed(lambda: self._outbox_items(self.index.pending(limit)))

    def outbox_since(self, start_ns: int, limit: int = 100) -> list[OutboxItem]:
        """Like :meth:`outbox`, for segments started at or after ``start_ns``: the live edge the
        uplink sends before any backlog (a plain oldest-first page would not reach it)."""
        return self._indexed(lambda: self._outbox_items(self.index.pending_since(start_ns, limit)))

    def _outbox_items(self, rows: list[IndexRow]) -> list[OutboxItem]:
        return outbox_items(self.index, self.root, rows)

    def mark_delivered(self, camera_id: str, sequence: int) -> None:
        self._indexed(lambda: self.index.mark_delivered(camera_id, sequence))

    def mark_envelope_delivered(self, camera_id: str, epoch_id: bytes) -> None:
        self._indexed(lambda: self.index.mark_epoch_delivered(camera_id, epoch_id))

    def mark_gap_delivered(self, camera_id: str, first: int) -> None:
        self.index.mark_gap_delivered(camera_id, first)

    def store_receipt(self, item: OutboxItem, raw: bytes) -> None:
        self.receipts.append(item.camera_id, item.start_wall_ns, raw)

    def mask_set_record(self, camera_id: str, digest: bytes) -> bytes | None:
        # Read from the audit log each time: the uplink asks once per set and connection.
        from . import maskhistory

        found = maskhistory.records_for(self.audit.path, self.public_key, {(camera_id, digest)})
        return found.get((camera_id, digest))

    def event_snapshot(self, camera_id: str, wall_ns: int, event_id: str) -> bytes | None:
        try:
            return eventlog.event_path(self.root, camera_id, wall_ns, event_id, "snp").read_bytes()
        except (FileNotFoundError, IntegrityError):
            return None

    def backlog(self) -> Backlog:
        count, ns, size = self._indexed(self.index.backlog)
        return Backlog(count, ns / 1e9, size)

    # --- life cycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lanes_lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            with lane.lock:
                if lane.epoch is not None:
                    lane.epoch.wipe()
                    lane.epoch = None
        self.index.close()
        from .recovery import CLEAN_MARK

        try:
            self._write_file(self.root / CLEAN_MARK, b"")
        except OSError as exc:  # the next start will just check the index
            log.warning("cannot mark a clean stop: %s", exc.strerror)

    def quarantine(self, path: Path, reason: str) -> None:
        files.quarantine(self.root / "quarantine", path, reason)

"""The retention purge and its audit: the I/O around :mod:`.retention`.

One cycle: read the holds in force (a broken hold log stops the purge: a removed hold must not
let evidence go), then for each unit and camera, under that camera's lock (so an upload never
interleaves), write the signed deletion record, then delete the segments from the index and
the disk (:meth:`.archive.CameraIndex.delete`). ``edge-csu serve`` runs a cycle at start, then
every ``retention.purge_interval_s`` and on SIGUSR1; ``edge-csu retention purge`` runs one on a
stopped receiver. ``purge.lock`` (flock) lets one cycle run at a time; a running receiver holds
``receiver.lock`` shared, so that the command refuses to delete files behind its back.

Threads: :func:`purge_once` runs in a worker thread of the receiver (it blocks on fsync);
:func:`run_periodically` on the receiver's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ...errors import ConfigError, IntegrityError
from . import deletions, receipts
from .archive import SegmentStore, StoredSegment
from .holds import HoldBook
from .retention import (
    DAY_NS,
    Hold,
    active_holds,
    age_basis_ns,
    by_release,
    event_expired,
    expired,
    group_released_events,
    released_holds,
)
from .settings import MAX_RETENTION_DAYS, RetentionConfig

log = logging.getLogger(__name__)

LEDGER_FILE = "deletions.jsonl"


@dataclass
class PurgeReport:
    deleted: int = 0
    events_deleted: int = 0
    held: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "deleted": self.deleted,
            "events_deleted": self.events_deleted,
            "held": self.held,
            "records": len(self.records),
        }


def ledger_path(cfg: RetentionConfig) -> Path:
    return cfg.directory / LEDGER_FILE


def open_ledger(cfg: RetentionConfig) -> deletions.DeletionLedger:
    """The deletion records with their key, created at first use (handled like the receipt
    key: 0600, public half beside it, never replaced)."""
    return deletions.DeletionLedger(ledger_path(cfg), receipts.load_or_create(cfg.key_file))


def public_key(cfg: RetentionConfig, given: Path | None = None) -> ed25519.Ed25519PublicKey:
    """The key an auditor checks records with: ``given`` (their own copy) or the one beside the
    signing key."""
    from cryptography.hazmat.primitives import serialization

    path = given or receipts.public_path(cfg.key_file)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot load the deletion-record public key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{path}: not an Ed25519 public key")
    return key


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[IO[str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, mode)
        yield fh


def _exclusive(cfg: RetentionConfig) -> tuple[IO[str] | None, str]:
    """``receiver.lock`` held exclusively (None when another process holds it), and what its
    holder wrote there ("pid N")."""
    path = cfg.directory / "receiver.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip()[:200]
        fh.close()
        return None, holder
    return fh, ""


def receiver_lock(cfg: RetentionConfig) -> contextlib.AbstractContextManager[IO[str]]:
    """Held by an embedded receiver for its whole life: a second ``edge-csu serve`` on the
    same storage (one started by hand beside the service) would keep its own index in memory
    and overwrite the first one's; it is refused at start, naming the first."""
    fh, holder = _exclusive(cfg)
    if fh is None:
        raise ConfigError(
            f"another receiver (edge-csu serve{', ' + holder if holder else ''}) runs on this "
            f"storage ({cfg.directory / 'receiver.lock'} is held): stop it first "
            "(systemctl stop edge-csu)"
        )
    fh.truncate(0)
    fh.write(f"pid {os.getpid()}\n")
    fh.flush()
    return contextlib.closing(fh)


def no_receiver_running(cfg: RetentionConfig) -> contextlib.AbstractContextManager[IO[str]]:
    """Exclusive ``receiver.lock``, or :class:`ConfigError` when a receiver is running."""
    fh, _holder = _exclusive(cfg)
    if fh is None:
        raise ConfigError(
            "a receiver (edge-csu serve) is running on this storage: it purges by itself; "
            "send it SIGUSR1 (systemctl kill -s USR1 edge-csu) to purge now"
        )
    return contextlib.closing(fh)


def purge_once(
    store: SegmentStore,
    cfg: RetentionConfig,
    ledger: deletions.DeletionLedger,
    *,
    now_ns: int,
) -> PurgeReport:
    """One purge cycle over every stored unit and camera."""
    days = min(cfg.days, MAX_RETENTION_DAYS)
    report = PurgeReport()
    with _flock(cfg.directory / "purge.lock", fcntl.LOCK_EX):
        ledger.reload()
        book = HoldBook(cfg.directory)
        log_entries = book.entries()
        holds = list(active_holds(log_entries).values())
        released = released_holds(log_entries)
        units = sorted(p.name for p in store.root.iterdir() if p.is_dir())
        for unit in units:
            for camera in store.cameras_of(unit):
                index = store.camera(unit, camera)
                with index.lock:
                    gone, held = expired(
                        unit, camera, index.segments.values(), holds, now_ns=now_ns, days=days
                    )
                    report.held += len(held)
                    # one record per reason the deletion comes when it does: the age alone,
                    # or the release of a hold that kept the segments until then
                    for why, segments in by_release(unit, camera, gone, released):
                        record = ledger.record(
                            unit,
                            camera,
                            segments,
                            deleted_ns=now_ns,
                            retention_days=days,
                            released_hold=why,
                        )
                        report.records.append(record)
                    if gone:
                        index.delete([m.sequence for m in gone])
                if gone:
                    report.deleted += len(gone)
                    log.info(
                        "retention: deleted %d segments of %s/%s older than %d days",
                        len(gone),
                        unit,
                        camera,
                        days,
                    )
            _purge_events(store, unit, holds, released, ledger, report, now_ns=now_ns, days=days)
    return report


def event_facts(raw: bytes, arrival_ns: int) -> tuple[int, str]:
    """A stored event document's time and camera; an unreadable one is aged by its arrival."""
    try:
        body = json.loads(raw)["event"]
        return int(body["wall_ns"]), str(body["camera"])
    except (ValueError, KeyError, TypeError):
        return arrival_ns, ""


EventScan = tuple[Path, bytes, str, int, int, bool | Hold]


def _scan_events(
    store: SegmentStore, unit: str, holds: list[Hold], *, now_ns: int, days: int
) -> Iterator[EventScan]:
    """Each stored event of ``unit``: path, bytes, camera, time, arrival and its verdict
    (:func:`.retention.event_expired`). An unreadable document is aged by its arrival."""
    for path in sorted((store.root / unit / "events").glob("*.json")):
        try:
            raw = path.read_bytes()
            arrival = path.stat().st_mtime_ns
        except FileNotFoundError:
            continue  # deleted meanwhile
        wall, camera = event_facts(raw, arrival)
        verdict = event_expired(unit, camera, wall, arrival, holds, now_ns=now_ns, days=days)
        yield path, raw, camera, wall, arrival, verdict


def _purge_events(
    store: SegmentStore,
    unit: str,
    holds: list[Hold],
    released: list[tuple[Hold, int]],
    ledger: deletions.DeletionLedger,
    report: PurgeReport,
    *,
    now_ns: int,
    days: int,
) -> None:
    """Delete the unit's stored events past the limit (one record per release reason, like
    segments). An unreadable event document is aged by its arrival (the file's time)."""
    held, groups = group_released_events(
        unit, _scan_events(store, unit, holds, now_ns=now_ns, days=days), released
    )
    report.held += held
    for why, items in groups:
        record = ledger.record_events(
            unit,
            [(path.stem, digest, age) for path, digest, age in items],
            deleted_ns=now_ns,
            retention_days=days,
            released_hold=why,
        )
        report.records.append(record)
        for path, _, _ in items:
            path.with_suffix(".unpublished").unlink(missing_ok=True)
            path.with_suffix(".snp").unlink(missing_ok=True)  # its sealed snapshot goes with it
            path.unlink(missing_ok=True)
        report.events_deleted += len(items)


async def run_periodically(
    cycle: Callable[[int], object],
    cfg: RetentionConfig,
    stop: asyncio.Event,
    run_blocking: Callable[..., Awaitable[Any]],
    clock: Callable[[], int] = time.time_ns,
) -> None:
    """The receiver's purge task: ``cycle(now_ns)`` (the embedded :func:`purge_once` or the
    cluster's :func:`.cluster_purge.purge_once`) at start, every interval, and on SIGUSR1. A
    failed cycle (a broken hold log, a full disk, the database out of reach) is logged and
    retried at the next one."""
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Not in the main thread (a receiver embedded in a test): periodic purges only.
    with contextlib.suppress(RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGUSR1, wake.set)
    while not stop.is_set():
        try:
            await run_blocking(lambda: cycle(clock()))
        except (OSError, IntegrityError) as exc:
            log.error("retention purge failed, retried in %.0f s: %s", cfg.purge_interval_s, exc)
        waits = [asyncio.ensure_future(e.wait()) for e in (stop, wake)]
        await asyncio.wait(waits, timeout=cfg.purge_interval_s, return_when="FIRST_COMPLETED")
        for w in waits:
            w.cancel()
        wake.clear()


@dataclass
class AuditReport:
    records: int
    head: str
    deleted: int
    problems: list[str]
    held: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "head": self.head,
            "deleted": self.deleted,
            "problems": self.problems,
            "held": self.held,
            "ok": not self.problems,
        }


def slack_ns(cfg: RetentionConfig) -> int:
    """How late a deletion may come: one purge interval and a minute."""
    return int(cfg.purge_interval_s * 1e9) + 60 * 1_000_000_000


def audit_records(
    cfg: RetentionConfig, public: ed25519.Ed25519PublicKey
) -> tuple[list[dict[str, Any]], deletions.LedgerHead, list[str], list[Hold]]:
    """The deletion records checked (signatures, chain, each deletion on time, each release
    it names in the hold log): ``(records, head, problems, holds in force)``. The part of the
    audit that both storages share."""
    problems: list[str] = []
    slack = slack_ns(cfg)
    try:
        records, head = deletions.verify(ledger_path(cfg), public)
    except IntegrityError as exc:
        records, head = [], deletions.LedgerHead(0, "")
        problems.append(str(exc))
    try:
        releases = {h.hold_id: t for h, t in released_holds(HoldBook(cfg.directory).entries())}
    except IntegrityError:
        releases = {}  # reported below with the hold log
    for r in records:
        days = int(r["retention_days"])
        if days > MAX_RETENTION_DAYS:
            problems.append(f"record {r['n']}: a limit of {days} days exceeds the legal 30")
        due = int(r["oldest_ns"]) + min(days, MAX_RETENTION_DAYS) * DAY_NS
        release = r.get("released_hold")
        if release is not None:
            if releases.get(release["hold_id"]) != release["released_ns"]:
                problems.append(
                    f"record {r['n']}: hold {release['hold_id']} has no such release in the log"
                )
            due = max(due, int(release["released_ns"]))
        late = int(r["deleted_ns"]) - due
        if late > slack:
            what = f"{r['unit']}/{r['camera'] or 'events'}"
            problems.append(f"record {r['n']}: {what} deleted {late / DAY_NS:.2f} days late")
    try:
        holds = list(HoldBook(cfg.directory).active().values())
    except IntegrityError as exc:
        holds = []
        problems.append(str(exc))
    return records, head, problems, holds


def audit_camera(
    unit: str,
    camera: str,
    segments: list[StoredSegment],
    holds: list[Hold],
    *,
    now_ns: int,
    days: int,
    slack: int,
) -> tuple[list[str], int]:
    """A camera's stored segments against the limit: ``(problems, how many a hold keeps
    past it)``; a problem is a segment past the limit by more than ``slack`` and not held."""
    _, held = expired(unit, camera, segments, holds, now_ns=now_ns, days=days)
    overdue, _ = expired(unit, camera, segments, holds, now_ns=now_ns - slack, days=days)
    problems = [
        f"{unit}/{camera}#{m.sequence} is {(now_ns - age_basis_ns(m)) / DAY_NS:.2f} days old "
        "and under no hold"
        for m in overdue
    ]
    return problems, len(held)


def audit(
    store: SegmentStore,
    cfg: RetentionConfig,
    public: ed25519.Ed25519PublicKey,
    *,
    now_ns: int,
) -> AuditReport:
    """Check the deletion records (signatures, chain, each deletion on time) and the storage
    (nothing older than the limit without a hold in force)."""
    slack = slack_ns(cfg)
    records, head, problems, holds = audit_records(cfg, public)
    days = min(cfg.days, MAX_RETENTION_DAYS)
    held_out: list[dict[str, Any]] = []
    for unit in sorted(p.name for p in store.root.iterdir() if p.is_dir()):
        for camera in store.cameras_of(unit):
            index = store.camera(unit, camera)
            with index.lock:
                segments = list(index.segments.values())
            # held: past the limit now; overdue: past it by more than a purge interval
            late, held = audit_camera(
                unit, camera, segments, holds, now_ns=now_ns, days=days, slack=slack
            )
            problems += late
            if held:
                held_out.append({"unit": unit, "camera": camera, "segments": held})
        late_events = _scan_events(store, unit, holds, now_ns=now_ns - slack, days=days)
        for path, _, _, wall, arrival, verdict in late_events:
            if verdict is True:
                age = (now_ns - min(wall, arrival)) / DAY_NS
                problems.append(f"{unit} event {path.stem} is {age:.2f} days old and under no hold")
    return AuditReport(
        records=head.count,
        head=head.hash,
        deleted=sum(int(r["count"]) for r in records),
        problems=problems,
        held=held_out,
    )

"""The retention purge and its audit in cluster mode: the embedded purge's policy
(:mod:`.retention`: age from the earlier clock, the 30-day cap, legal holds, one record per
release) over PostgreSQL's rows and the object store's bytes.

One receiver purges at a time across the cluster: a cycle first tries the database's purge
lock (a session advisory lock, :meth:`.pgindex.PgSegmentIndex.purge_lock`); a receiver that
does not get it skips the cycle (another is purging the same rows). The lock dies with its
connection, so a receiver killed mid-purge blocks no one.

Order, per camera, so that a crash never leaves a row naming a missing object: the signed
deletion record first (fsync'd), then the rows (segments, and the envelopes no remaining
segment needs) in one transaction, then the objects. A crash after the record leaves rows
the next cycle deletes and records again (as in embedded mode); a crash after the rows leaves
objects no row names: orphans ``edge-csu retention sweep`` deletes.

The deletion records and the hold log stay files in ``[retention] directory``, in the
embedded format and under the same key: in cluster mode that directory is shared by every
receiver that purges (see docs/OPERATIONS.md section 11). The database keeps the head of
the records and the number of hold-log entries the last purge saw; a purge that finds a
shorter log or another head here refuses to delete (a receiver on its own directory, or a
log cut short), so that a hold placed in the shared log is never missed.

Threads: :func:`purge_once` runs in a worker thread of the receiver (it blocks on the
database, the object store and fsync) or in ``edge-csu retention purge``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ...errors import IntegrityError
from . import deletions
from .cluster import ClusterStore
from .holds import HoldBook
from .objstore import segment_key
from .purge import (
    AuditReport,
    PurgeReport,
    audit_camera,
    audit_records,
    event_facts,
    slack_ns,
)
from .retention import (
    DAY_NS,
    Hold,
    active_holds,
    by_release,
    event_expired,
    expired,
    group_released_events,
    ranges,
    released_holds,
)
from .settings import MAX_RETENTION_DAYS, RetentionConfig

log = logging.getLogger(__name__)


def purge_once(
    store: ClusterStore,
    cfg: RetentionConfig,
    ledger: deletions.DeletionLedger,
    *,
    now_ns: int,
) -> PurgeReport | None:
    """One purge cycle over the cluster; None when another receiver holds the purge lock."""
    index = store.index()
    with index.purge_lock() as got:
        if not got:
            log.info("retention: another receiver is purging; this cycle is skipped")
            return None
        return _purge_locked(store, cfg, ledger, now_ns=now_ns)


def _check_shared(store: ClusterStore, ledger: deletions.DeletionLedger, hold_entries: int) -> None:
    """Refuse to purge from a retention directory that is not the one the last purge used
    (its deletion records or its hold log behind the database's account of them)."""
    state = store.index().retention_state()
    if state is None:
        return
    count, head, holds_seen = state
    here = ledger.head
    if here.count < count or ledger.line_hash(count - 1) != head:
        raise IntegrityError(
            f"{ledger.path}: {here.count} deletion records here, the database's last purge "
            f"left {count} ending {head[:12]}: not the cluster's shared retention directory, "
            "or records removed; purges are stopped"
        )
    last_key = ledger.last_key_id()
    if last_key is not None and last_key != ledger.key_id:
        raise IntegrityError(
            f"{ledger.path}: the records are signed with key {last_key}, this receiver's "
            f"retention key is {ledger.key_id}: every purging receiver needs the shared "
            "key_file; purges are stopped"
        )
    if hold_entries < holds_seen:
        raise IntegrityError(
            f"hold log: {hold_entries} entries here, the last purge saw {holds_seen}: not the "
            "cluster's shared retention directory, or entries removed; purges are stopped"
        )


def _purge_locked(
    store: ClusterStore, cfg: RetentionConfig, ledger: deletions.DeletionLedger, *, now_ns: int
) -> PurgeReport:
    days = min(cfg.days, MAX_RETENTION_DAYS)
    limit = now_ns - days * DAY_NS
    report = PurgeReport()
    index = store.index()
    ledger.reload()
    entries = HoldBook(cfg.directory).entries()  # a broken log stops the purge
    _check_shared(store, ledger, len(entries))
    holds = list(active_holds(entries).values())
    released = released_holds(entries)
    for unit in store.units():
        for camera in store.cameras_of(unit):
            gone, held = expired(
                unit, camera, index.aged(unit, camera, limit), holds, now_ns=now_ns, days=days
            )
            report.held += len(held)
            if not gone:
                continue
            for why, segments in by_release(unit, camera, gone, released):
                report.records.append(
                    ledger.record(
                        unit,
                        camera,
                        segments,
                        deleted_ns=now_ns,
                        retention_days=days,
                        released_hold=why,
                    )
                )
            sequences = [m.sequence for m in gone]
            rows, epochs = index.delete_segments(unit, camera, ranges(sequences), sequences, now_ns)
            for sequence, digest in rows:
                try:
                    store.objects.delete(segment_key(unit, camera, sequence, digest))
                except OSError as exc:  # an orphan now: the sweep deletes it
                    log.warning("retention: %s (left to edge-csu retention sweep)", exc)
            report.deleted += len(rows)
            log.info(
                "retention: deleted %d segments of %s/%s older than %d days (%d envelopes)",
                len(rows),
                unit,
                camera,
                days,
                len(epochs),
            )
        _purge_events(store, unit, holds, released, ledger, report, now_ns=now_ns, days=days)
    store.index().set_retention_state(ledger.head.count, ledger.head.hash, len(entries))
    return report


def _purge_events(
    store: ClusterStore,
    unit: str,
    holds: list[Hold],
    released: list[tuple[Hold, int]],
    ledger: deletions.DeletionLedger,
    report: PurgeReport,
    *,
    now_ns: int,
    days: int,
) -> None:
    """The unit's stored events past the limit: one record per release reason, then the
    rows (events live in the database only)."""

    def scanned() -> Iterator[tuple[str, bytes, str, int, int, bool | Hold]]:
        for event_id, raw, arrival in store.index().events(unit):
            wall, camera = event_facts(raw, arrival)
            verdict = event_expired(unit, camera, wall, arrival, holds, now_ns=now_ns, days=days)
            yield event_id, raw, camera, wall, arrival, verdict

    held, groups = group_released_events(unit, scanned(), released)
    report.held += held
    for why, items in groups:
        report.records.append(
            ledger.record_events(
                unit, items, deleted_ns=now_ns, retention_days=days, released_hold=why
            )
        )
        report.events_deleted += store.index().delete_events(unit, [i for i, _, _ in items])


def audit(
    store: ClusterStore,
    cfg: RetentionConfig,
    public: ed25519.Ed25519PublicKey,
    *,
    now_ns: int,
) -> AuditReport:
    """The embedded audit's checks (records, holds, nothing overdue) against the database,
    and the records' head against the one the last purge left there."""
    slack = slack_ns(cfg)
    records, head, problems, holds = audit_records(cfg, public)
    state = store.index().retention_state()
    if state is not None and head.hash:  # head.hash empty: the records failed, reported
        count, last, _ = state
        # the record after the last purge's names that head as its ``prev``
        seen = (
            head.hash
            if head.count == count
            else (str(records[count]["prev"]) if head.count > count else "")
        )
        if seen != last:
            problems.append(
                f"the database's last purge left {count} deletion records ending "
                f"{last[:12]}; the file does not (records removed or replaced)"
            )
    days = min(cfg.days, MAX_RETENTION_DAYS)
    held_out: list[dict[str, Any]] = []
    index = store.index()
    for unit in store.units():
        for camera in store.cameras_of(unit):
            # only the candidates: what is past the limit now (held) or by the slack (late)
            segments = index.aged(unit, camera, now_ns - days * DAY_NS)
            late, held = audit_camera(
                unit, camera, segments, holds, now_ns=now_ns, days=days, slack=slack
            )
            problems += late
            if held:
                held_out.append({"unit": unit, "camera": camera, "segments": held})
        for event_id, raw, arrival in index.events(unit):
            wall, camera = event_facts(raw, arrival)
            verdict = event_expired(
                unit, camera, wall, arrival, holds, now_ns=now_ns - slack, days=days
            )
            if verdict is True:
                age = (now_ns - min(wall, arrival)) / DAY_NS
                problems.append(f"{unit} event {event_id} is {age:.2f} days old and under no hold")
    return AuditReport(
        records=head.count,
        head=head.hash,
        deleted=sum(int(r["count"]) for r in records),
        problems=problems,
        held=held_out,
    )

"""Cluster mode's segment path: a receiver among several, sharing PostgreSQL (the index, the
judge of every chain decision, :mod:`.pgindex`) and an S3-compatible store (the sealed bytes,
:mod:`.objstore`).

Order of one upload: check the segment alone (parse, header, signature:
:func:`.archive.checked_segment`); put its bytes under their hash-named key; then let the
database decide. Stored or duplicate: the bytes are where the row says. Refused: the bytes
just uploaded are deleted — every refusal is permanent (a held sequence, a predecessor or
successor that does not match never changes), so no other receiver can be relying on them:
one sending the same bytes is refused likewise. A crash between the upload and the decision
leaves an object without a row: garbage for a sweep, never evidence.

Thread-safety: the object store client is shared; each thread needs its own index
(connection), so one :class:`ClusterArchive` per worker thread.

:class:`ClusterStore` is what ``edge-csu serve`` runs on with ``storage = "cluster"``: the
embedded store's interface (segments, gap records, envelopes, events, unit status, cursor)
over the shared database and object store, with one database connection per worker thread,
and the read side the operators' listener needs (:class:`.base.SegmentReader`): any receiver
serves any camera from the shared stores alone, nothing read is kept on the receiver.
Events are stored by id: the receiver whose insert creates the row publishes the event and
marks it published once the broker acknowledges it; a retry (to the same or another receiver)
of an event already marked is acknowledged and not published again. An event left unmarked
(its receiver died, the broker was away) is claimed after the publication lease and
published again (at least once, deduplicated by id: :mod:`.mqtt_relay`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg.conninfo
from cryptography.hazmat.primitives.asymmetric import ed25519

from ...errors import ConfigError, IntegrityError, StorageUnavailableError
from ...vault import format as sealed
from ...vault.recipient_keys import RecipientPrivate
from .archive import (
    CameraIndex,
    CameraRecords,
    Refusal,
    StoredEvent,
    StoredSegment,
    Verdict,
    checked_envelope,
    checked_gap,
    checked_segment,
    masks_in_force,
)
from .objstore import ObjectStore, parse_key, segment_key
from .pgindex import PgSegmentIndex
from .settings import ClusterConfig, ClusterDatabaseConfig


class ClusterArchive:
    def __init__(self, index: PgSegmentIndex, objects: ObjectStore) -> None:
        self.index = index
        self.objects = objects

    def accept_segment(
        self,
        unit_id: str,
        camera_id: str,
        sequence: int,
        raw: bytes,
        key: ed25519.Ed25519PublicKey,
    ) -> tuple[Verdict, StoredSegment]:
        meta = checked_segment(unit_id, camera_id, sequence, raw, key)
        object_key = segment_key(unit_id, camera_id, sequence, meta.hash)
        self.objects.put(object_key, raw)
        try:
            verdict = self.index.accept(unit_id, camera_id, meta)
        except Refusal:
            self.objects.delete(object_key)
            raise
        return verdict, meta

    def read_segment(self, unit_id: str, camera_id: str, sequence: int) -> bytes:
        """The bytes under the key the database names for the sequence, checked against the
        hash in that key (:class:`IntegrityError` otherwise: altered in the object store)."""
        meta = self.index.segment(unit_id, camera_id, sequence)
        if meta is None:
            raise FileNotFoundError(f"{unit_id}/{camera_id}#{sequence} is not stored")
        key = segment_key(unit_id, camera_id, sequence, meta.hash)
        raw = self.objects.get(key)
        if hashlib.sha256(raw).hexdigest() != meta.hash:
            raise IntegrityError(f"object store: {key}: the bytes do not match their digest")
        return raw


def _secret(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc})") from None


def conninfo_of(db: ClusterDatabaseConfig) -> str:
    """The libpq connection string of ``[cluster.database]``, its password file's included."""
    extra = (
        {}
        if db.password_file is None
        else {"password": _secret(db.password_file, "database password")}
    )
    return psycopg.conninfo.make_conninfo(db.conninfo, **extra)


class ClusterStore:
    """The receiver's store in cluster mode (see the module docstring). Thread-safe."""

    def __init__(self, cfg: ClusterConfig) -> None:
        self.receiver_id = cfg.receiver_id
        self._conninfo = conninfo_of(cfg.database)
        self._timeout = cfg.database.connect_timeout_s
        o = cfg.object_store
        self.objects = ObjectStore(
            o.endpoint, o.bucket, o.access_key, o.secret_file, timeout_s=o.timeout_s,
            ca_file=o.ca_file,
        )  # fmt: skip
        self._local = threading.local()
        self._all: list[PgSegmentIndex] = []
        self._lock = threading.Lock()

    def index(self) -> PgSegmentIndex:
        """This thread's connection to the database (made on first use, kept)."""
        index: PgSegmentIndex | None = getattr(self._local, "index", None)
        if index is None:
            index = PgSegmentIndex(
                self._conninfo, self.receiver_id, connect_timeout_s=self._timeout
            )
            self._local.index = index
            with self._lock:
                self._all.append(index)
        return index

    def prepare(self) -> int:
        """At start: the schema migrated (under the database's advisory lock) and the bucket
        reachable. :class:`StorageUnavailableError` if either is not."""
        version = self.index().migrate()
        self.objects.check_bucket()
        return version

    def close(self) -> None:
        with self._lock:
            for index in self._all:
                index.close()
            self._all.clear()

    def archive(self) -> ClusterArchive:
        return ClusterArchive(self.index(), self.objects)

    # --- what the units send --------------------------------------------------------------------

    def accept_segment(
        self, unit_id: str, camera_id: str, sequence: int, raw: bytes,
        key: ed25519.Ed25519PublicKey,
    ) -> tuple[Verdict, StoredSegment]:  # fmt: skip
        return self.archive().accept_segment(unit_id, camera_id, sequence, raw, key)

    def read_segment(self, unit_id: str, camera_id: str, sequence: int) -> bytes:
        return self.archive().read_segment(unit_id, camera_id, sequence)

    def accept_gap(
        self, unit_id: str, camera_id: str, first: int, last: int, raw: bytes,
        key: ed25519.Ed25519PublicKey,
    ) -> tuple[Verdict, list[int]]:  # fmt: skip
        gap = checked_gap(unit_id, camera_id, first, last, raw, key)
        index = self.index()
        verdict = index.accept_gap(
            unit_id, camera_id, first, last, gap.prev_hash.hex(), gap.chain_hash.hex(), raw
        )
        return verdict, index.held_in(unit_id, camera_id, first, last)

    def accept_envelope(
        self, unit_id: str, camera_id: str, epoch_hex: str, raw: bytes,
        key: ed25519.Ed25519PublicKey,
    ) -> Verdict:  # fmt: skip
        checked_envelope(unit_id, camera_id, epoch_hex, raw, key)
        return self.index().accept_envelope(unit_id, camera_id, epoch_hex, raw)

    def read_envelope(self, unit_id: str, camera_id: str, epoch_hex: str) -> bytes | None:
        return self.index().envelope(unit_id, camera_id, epoch_hex)

    def store_event(
        self, unit_id: str, event_id: str, body: bytes, *, to_publish: bool = False
    ) -> Verdict:
        return self.index().store_event(unit_id, event_id, body, to_publish=to_publish)

    def is_unpublished(self, unit_id: str, event_id: str) -> bool:
        """Whether this receiver is to publish the event now (it holds the claim); while
        another receiver is publishing it, :class:`StorageUnavailableError` (503): the unit
        sends it again later and is then acknowledged, without a second publication."""
        claimed = self.index().claim_publication(unit_id, event_id)
        if claimed is None:
            raise StorageUnavailableError(f"event {event_id} is being published elsewhere")
        return claimed

    def mark_published(self, unit_id: str, event_id: str) -> None:
        self.index().mark_published(unit_id, event_id)

    def claim_unpublished(self, limit: int, min_age_s: float) -> list[tuple[str, str, bytes]]:
        """Events stored and not yet published that this receiver now holds the claim of
        (:meth:`.pgindex.PgSegmentIndex.claim_unpublished`)."""
        return self.index().claim_unpublished(limit, min_age_s)

    # --- what the units and the CSU's agents read -----------------------------------------------

    def write_status(self, unit_id: str, status: dict[str, Any]) -> None:
        self.index().write_status(unit_id, status)

    def read_status(self, unit_id: str) -> dict[str, Any]:
        return self.index().read_status(unit_id)

    def units(self) -> list[str]:
        return self.index().units()

    def cameras_of(self, unit_id: str) -> list[str]:
        return self.index().cameras_of(unit_id)

    def _gaps(self, unit_id: str, camera_id: str) -> list[sealed.GapRecord]:
        return [sealed.parse_gap(raw) for raw in self.index().gap_records(unit_id, camera_id)]

    # --- the read side of viewing (:class:`.base.SegmentReader`): the shared stores only -------

    def latest(self, unit_id: str, camera_id: str, count: int) -> list[StoredSegment]:
        return self.index().latest(unit_id, camera_id, count)

    def in_range(
        self, unit_id: str, camera_id: str, from_ns: int, to_ns: int
    ) -> list[StoredSegment]:
        return self.index().in_range(unit_id, camera_id, from_ns, to_ns)

    def span(self, unit_id: str, camera_id: str) -> tuple[int, int] | None:
        return self.index().span(unit_id, camera_id)

    def records(self, unit_id: str, camera_id: str, from_ns: int, to_ns: int) -> CameraRecords:
        segments, gaps, purged = self.index().records(unit_id, camera_id, from_ns, to_ns)
        return CameraRecords(segments, [sealed.parse_gap(raw) for raw in gaps], purged)

    def events(self, unit_id: str) -> list[StoredEvent]:
        return [StoredEvent(i, body, t / 1e9) for i, body, t in self.index().events(unit_id)]

    def read_mask_set(self, unit_id: str, camera_id: str, digest_hex: str) -> bytes | None:
        """Mask-set records are kept in embedded mode only (the route answers 404 here):
        a bundle built in cluster mode declares them not held."""
        return None

    def keep_receipt(self, unit_id: str, camera_id: str, sequence: int, raw: bytes) -> bytes:
        """Keep the receipt just signed unless one is kept already (by any receiver); the one
        kept, as :meth:`.archive.SegmentStore.keep_receipt`."""
        return self.index().keep_receipt(unit_id, camera_id, sequence, raw)

    def read_receipts(
        self, unit_id: str, camera_id: str, sequences: Iterable[int]
    ) -> dict[int, bytes]:
        return self.index().receipts(unit_id, camera_id, list(sequences))

    def has_snapshot(self, unit_id: str, event_id: str) -> bool:
        return False  # snapshots are kept in embedded mode only (the route answers 404 here)

    def read_snapshot(self, unit_id: str, event_id: str) -> bytes | None:
        return None

    def open_snapshot(
        self,
        unit_id: str,
        event_id: str,
        key: ed25519.Ed25519PublicKey,
        private: RecipientPrivate,
    ) -> tuple[dict[str, Any], bytes]:
        raise Refusal(404, "alert snapshots are kept in embedded mode only")

    def masks_in_force(
        self, unit_id: str, camera_id: str, key: ed25519.Ed25519PublicKey
    ) -> dict[str, Any] | None:
        return masks_in_force(self, unit_id, camera_id, key)

    def event(self, unit_id: str, event_id: str) -> StoredEvent | None:
        found = self.index().event(unit_id, event_id)
        return None if found is None else StoredEvent(event_id, found[0], found[1] / 1e9)

    def cursor(self, unit_id: str) -> dict[str, Any]:
        """Where the unit resumes, from the database alone (aggregates, not every row)."""
        cams = {}
        for cam in self.cameras_of(unit_id):
            summary = self.index().summary(unit_id, cam)
            # gap records and the purge's deletions are not holes to backfill
            lost = [(g.first, g.last) for g in self._gaps(unit_id, cam)]
            lost += self.index().purged(unit_id, cam)
            summary["gaps"] = [
                h for h in summary["gaps"] if not any(a <= h[0] and h[1] <= b for a, b in lost)
            ]
            cams[cam] = summary
        return {"unit": unit_id, "cameras": cams}

    def camera_status(self, unit_id: str, camera_id: str) -> dict[str, Any]:
        """The embedded store's camera status (chain, gaps, conflicts) over the database's
        rows: ``edge-csu units`` in cluster mode."""
        segments = self.index().segments(unit_id, camera_id)
        index = CameraIndex.of(segments, self._gaps(unit_id, camera_id))
        index.purged = self.index().purged(unit_id, camera_id)
        return index.status()

    def sweep(self, *, older_than_s: float, now: float) -> dict[str, int]:
        """Delete the objects no row names (a receiver killed between its upload and the
        database's decision, a loser's bytes whose deletion failed) once older than
        ``older_than_s``: younger ones may belong to an upload whose decision is coming."""
        counts = {"objects": 0, "orphans_deleted": 0, "orphans_too_young": 0, "other_keys": 0}
        for page in self.objects.listing():
            parsed = [(key, parse_key(key), modified) for key, modified in page]
            counts["objects"] += len(page)
            counts["other_keys"] += sum(1 for _, p, _ in parsed if p is None)
            held = self.index().held([p for _, p, _ in parsed if p is not None])
            for key, p, modified in parsed:
                if p is None or p in held:
                    continue
                if now - modified < older_than_s:
                    counts["orphans_too_young"] += 1
                    continue
                self.objects.delete(key)
                counts["orphans_deleted"] += 1
        return counts

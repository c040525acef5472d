"""The storage seam of the receiver: what a place that keeps sealed segments must offer.

Two implementations: :class:`.archive.SegmentStore` (embedded: a directory, one receiver; what
``edge-csu serve`` runs) and :class:`.cluster.ClusterArchive` / :class:`.cluster.ClusterStore`
(PostgreSQL decides, an S3-compatible store keeps the bytes; several receivers). Both apply
the same chain rules and answer with the same verdicts and refusals
(``tests/test_csu_cluster.py`` runs one script of arrivals against both).

The read side, :class:`SegmentReader`, is what the operators' listener reads (HLS viewing, the
console, the MP4 export and the evidence bundle): the same answers from both implementations
(``tests/test_csu_seam_read.py``), so that in cluster mode any receiver serves any camera from
the shared stores alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ed25519

from ...vault.recipient_keys import RecipientPrivate
from .archive import CameraRecords, StoredEvent, StoredSegment, Verdict


class SegmentArchive(Protocol):
    def accept_segment(
        self,
        unit_id: str,
        camera_id: str,
        sequence: int,
        raw: bytes,
        key: ed25519.Ed25519PublicKey,
    ) -> tuple[Verdict, StoredSegment]:
        """Store a unit's segment once, under the chain rules; :class:`.archive.Refusal`
        (400, 409, 422) otherwise. A retry of the same bytes is :attr:`Verdict.DUPLICATE`."""
        ...

    def read_segment(self, unit_id: str, camera_id: str, sequence: int) -> bytes:
        """The exact bytes the unit sent; :class:`FileNotFoundError` if not stored."""
        ...


__all__ = ["CameraRecords", "SegmentArchive", "SegmentReader", "StoredEvent"]


class SegmentReader(Protocol):
    """What the operators' listener reads from a store. Thread-safe (the receiver's pool)."""

    def units(self) -> list[str]:
        """Units the store holds anything of."""
        ...

    def cameras_of(self, unit_id: str) -> list[str]:
        """The unit's cameras, sorted."""
        ...

    def latest(self, unit_id: str, camera_id: str, count: int) -> list[StoredSegment]:
        """The ``count`` highest stored sequences, by sequence (a live playlist)."""
        ...

    def in_range(
        self, unit_id: str, camera_id: str, from_ns: int, to_ns: int
    ) -> list[StoredSegment]:
        """Stored segments that end after ``from_ns`` and start before ``to_ns``, by
        sequence (a recorded playlist, an export, the console's timeline)."""
        ...

    def span(self, unit_id: str, camera_id: str) -> tuple[int, int] | None:
        """(earliest start, latest end) of the camera's stored segments; None if none."""
        ...

    def records(self, unit_id: str, camera_id: str, from_ns: int, to_ns: int) -> CameraRecords:
        """The segments of :meth:`in_range` with the camera's gap records and purged ranges,
        read together (what an evidence bundle declares)."""
        ...

    def read_segment(self, unit_id: str, camera_id: str, sequence: int) -> bytes:
        """The exact bytes the unit sent; :class:`FileNotFoundError` if not stored."""
        ...

    def read_envelope(self, unit_id: str, camera_id: str, epoch_hex: str) -> bytes | None:
        """The unit's signed epoch envelope as it sent it; None if not received."""
        ...

    def read_status(self, unit_id: str) -> dict[str, Any]:
        """What the unit last reported of itself (contact, backlog, fleet); {} if nothing."""
        ...

    def events(self, unit_id: str) -> list[StoredEvent]:
        """The unit's stored events (any order)."""
        ...

    def read_mask_set(self, unit_id: str, camera_id: str, digest_hex: str) -> bytes | None:
        """The unit's signed record of a mask set, as it sent it; None if not held."""
        ...

    def read_receipts(
        self, unit_id: str, camera_id: str, sequences: Iterable[int]
    ) -> dict[int, bytes]:
        """The receipts the receivers signed and kept of those segments, by sequence (absent:
        none kept, e.g. received before the receivers kept them)."""
        ...

    def has_snapshot(self, unit_id: str, event_id: str) -> bool:
        """Whether the sealed snapshot a stored event names is held."""
        ...

    def read_snapshot(self, unit_id: str, event_id: str) -> bytes | None:
        """The sealed snapshot of a stored event, as the unit sent it; None if not held."""
        ...

    def open_snapshot(
        self,
        unit_id: str,
        event_id: str,
        key: ed25519.Ed25519PublicKey,
        private: RecipientPrivate,
    ) -> tuple[dict[str, Any], bytes]:
        """(event body, JPEG) of a held snapshot, checked again; :class:`.archive.Refusal`
        404 when not held."""
        ...

    def masks_in_force(
        self, unit_id: str, camera_id: str, key: ed25519.Ed25519PublicKey
    ) -> dict[str, Any] | None:
        """The masks the camera's newest stored segment commits to, for the console's
        overlay (:func:`.archive.masks_in_force`); None when nothing is stored."""
        ...

    def event(self, unit_id: str, event_id: str) -> StoredEvent | None:
        """One stored event; None if not stored."""
        ...

"""The storage seam of the receiver: what a place that keeps sealed segments must offer.

Two implementations: :class:`.archive.SegmentStore` (embedded: a directory, one receiver; what
``edge-csu serve`` runs) and :class:`.cluster.ClusterArchive` (PostgreSQL decides, an
S3-compatible store keeps the bytes; several receivers). Both apply the same chain rules and
answer with the same verdicts and refusals (``tests/test_csu_cluster.py`` runs one script of
arrivals against both). Envelopes, gap records, events and unit status are still embedded
only (docs/UPLINK.md, *Known limits*).
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ed25519

from .archive import StoredSegment, Verdict


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

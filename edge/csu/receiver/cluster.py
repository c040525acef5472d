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
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ed25519

from .archive import Refusal, StoredSegment, Verdict, checked_segment
from .objstore import ObjectStore, segment_key
from .pgindex import PgSegmentIndex


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
        meta = self.index.segment(unit_id, camera_id, sequence)
        if meta is None:
            raise FileNotFoundError(f"{unit_id}/{camera_id}#{sequence} is not stored")
        return self.objects.get(segment_key(unit_id, camera_id, sequence, meta.hash))

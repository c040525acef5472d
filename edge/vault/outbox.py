"""The outbox view: undelivered index rows as :class:`OutboxItem`s, envelopes first."""

from __future__ import annotations

from pathlib import Path

from . import layout
from .base import OutboxItem, OutboxKind
from .index import Index, IndexRow


def outbox_items(index: Index, root: Path, rows: list[IndexRow]) -> list[OutboxItem]:
    """Items for ``rows`` (in their order); the envelope of an epoch not yet delivered comes
    right before the first segment that needs it."""
    pending_epochs = index.pending_epochs()
    items: list[OutboxItem] = []
    # Gap records first: a handful of small files, and the CSU needs one before it can accept
    # the segment that continues the chain through it.
    for camera, first, last in index.pending_gaps():
        path = layout.gap_path(root, camera, first, last)
        size = path.stat().st_size if path.exists() else 0
        items.append(OutboxItem(OutboxKind.GAP, camera, first, b"", 0, 0, size, path))
    for row in rows:
        key = (row.camera_id, row.epoch_id)
        if key in pending_epochs:
            pending_epochs.discard(key)
            created = index.epoch_created(*key) or row.start_wall_ns
            path = layout.envelope_path(root, row.camera_id, created, row.epoch_id)
            items.append(
                OutboxItem(
                    OutboxKind.ENVELOPE,
                    row.camera_id,
                    -1,
                    row.epoch_id,
                    created,
                    created,
                    path.stat().st_size if path.exists() else 0,
                    path,
                )
            )
        items.append(
            OutboxItem(
                OutboxKind.SEGMENT,
                row.camera_id,
                row.sequence,
                row.epoch_id,
                row.start_wall_ns,
                row.end_wall_ns,
                row.size,
                layout.segment_path(root, row.camera_id, row.start_wall_ns, row.sequence),
            )
        )
    return items

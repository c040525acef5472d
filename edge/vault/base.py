"""What the vault offers the rest of the firmware besides :class:`SegmentSink`.

The uplink (CSU client) reads the :class:`Outbox`: sealed segments and epoch envelopes not yet
acknowledged by the CSU, oldest first, as the exact bytes the vault holds (they travel
unchanged). An envelope always comes before the first segment that needs it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..errors import VaultError


class OutboxKind(StrEnum):
    ENVELOPE = "envelope"
    SEGMENT = "segment"
    GAP = "gap"
    """A signed gap record (sequences lost at the unit); ``sequence`` is its first one."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    kind: OutboxKind
    camera_id: str
    sequence: int
    """Sequence of a segment; -1 for an envelope."""
    epoch_id: bytes
    start_wall_ns: int
    end_wall_ns: int
    size: int
    path: Path

    def read(self) -> bytes:
        """The exact sealed bytes; :class:`VaultError` if retention removed them meanwhile."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise VaultError(
                f"{self.kind} {self.camera_id}#{self.sequence} was purged before delivery"
            ) from None
        except OSError as exc:
            raise VaultError(f"{self.path}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class Backlog:
    segments: int
    seconds: float
    bytes: int


class Outbox(abc.ABC):
    """Store-and-forward view for the uplink. Safe to call from the uplink's own thread."""

    @abc.abstractmethod
    def outbox(self, limit: int = 100) -> list[OutboxItem]:
        """Undelivered items, oldest first; envelopes precede the segments they open."""

    @abc.abstractmethod
    def mark_delivered(self, camera_id: str, sequence: int) -> None:
        """The CSU acknowledged segment ``sequence`` of ``camera_id``."""

    @abc.abstractmethod
    def mark_envelope_delivered(self, camera_id: str, epoch_id: bytes) -> None:
        """The CSU acknowledged the envelope of ``epoch_id``."""

    def store_receipt(self, item: OutboxItem, raw: bytes) -> None:  # noqa: B027 - optional
        """Keep the CSU's receipt (already checked) of a delivered segment; the vault keeps it
        with its evidence, other outboxes may drop it."""

    def mask_set_record(self, camera_id: str, digest: bytes) -> bytes | None:
        """The signed ``mask-set`` record (one audit line) of the set ``digest`` of
        ``camera_id``, for the CSU; None when this outbox has none (the default)."""
        return None

    def event_snapshot(self, camera_id: str, wall_ns: int, event_id: str) -> bytes | None:
        """The sealed snapshot (``.snp``) of an event, for the CSU; None when this outbox
        keeps none (the default) or has none of that event."""
        return None

    def mark_gap_delivered(self, camera_id: str, first: int) -> None:  # noqa: B027 - optional
        """The CSU acknowledged the gap record that starts at ``first`` (vaults that write
        gap records override this)."""

    @abc.abstractmethod
    def backlog(self) -> Backlog:
        """What waits for delivery, in segments, seconds of video and bytes."""

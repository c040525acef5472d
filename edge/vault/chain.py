"""The hash-chain walk every verifier shares: verify, evidence export and opening, recovery.

A camera's segments form one chain: segment ``n`` carries the hash of segment ``n - 1``
(``prev_hash``). Where the unit lost sequences it wrote a signed gap record at start-up; the
record takes the place of the lost run (``prev_hash`` of the segment before it, ``chain_hash``
that the segment after it continues), so the chain goes on through it and the loss is named,
never silently passed. Pure: callers load and verify the records, then ask where the chain goes
next and report in their own words.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field

from .format import GapRecord


@dataclass(frozen=True)
class Next:
    """Where the chain goes on: the sequence the next segment must carry and its prev_hash."""

    sequence: int
    prev_hash: bytes
    crossed: list[GapRecord] = field(default_factory=list)
    """The gap records walked through, in order."""

    def continued_by(self, sequence: int, prev_hash: bytes) -> bool:
        """Whether a segment with this sequence and previous-hash is the next link."""
        return sequence == self.sequence and prev_hash == self.prev_hash


def through_gaps(
    gaps: Mapping[int, GapRecord],
    sequence: int,
    prev_hash: bytes,
    *,
    stop: Container[int] = (),
) -> Next:
    """From the point where the next segment should be ``sequence`` with ``prev_hash``, past
    every signed gap record (``gaps`` keyed by first lost sequence) that continues the chain
    there. A record whose first sequence is in ``stop`` ends the walk (already reported)."""
    crossed: list[GapRecord] = []
    while (gap := gaps.get(sequence)) is not None and gap.prev_hash == prev_hash:
        if gap.first in stop:
            break
        crossed.append(gap)
        sequence, prev_hash = gap.last + 1, gap.chain_hash
    return Next(sequence, prev_hash, crossed)

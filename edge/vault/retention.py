"""Retention policy: which segments a purge removes. Pure: plain data in, a plan out.

Recordings are destroyed when older than ``retention_days`` (at most 30: the legal limit) and,
oldest first, when the vault exceeds ``max_bytes`` or the file system's free space falls below
``min_free_percent``. A purge always removes a *prefix* of each camera's chain (every sequence
up to a cut-off), so a signed checkpoint can stand in for what was removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    camera_id: str
    sequence: int
    start_wall_ns: int
    end_wall_ns: int
    size: int


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    retention_days: int
    max_bytes: int = 0
    """0: no size bound other than free space."""
    min_free_percent: float = 0.0


@dataclass(frozen=True, slots=True)
class DiskUsage:
    total_bytes: int
    free_bytes: int
    vault_bytes: int


@dataclass(slots=True)
class PurgePlan:
    cutoffs: dict[str, int] = field(default_factory=dict)
    """camera id -> highest sequence to purge (every lower sequence goes too)."""
    by_age: int = 0
    by_space: int = 0
    bytes: int = 0

    @property
    def count(self) -> int:
        return self.by_age + self.by_space


def bytes_to_free(policy: RetentionPolicy, usage: DiskUsage, extra_needed: int = 0) -> int:
    """How many bytes the space rules want freed now (``extra_needed``: a write that failed)."""
    over_max = usage.vault_bytes - policy.max_bytes if policy.max_bytes else 0
    min_free = int(usage.total_bytes * policy.min_free_percent / 100.0)
    short_free = min_free - usage.free_bytes + extra_needed
    return max(0, over_max, short_free)


def plan_purge(
    oldest_first: Iterable[SegmentInfo],
    policy: RetentionPolicy,
    usage: DiskUsage,
    now_wall_ns: int,
    *,
    extra_needed: int = 0,
) -> PurgePlan:
    """Plan a purge over segments given oldest first (by start time, all cameras mixed).

    Reads the iterable only as far as needed, so the caller can stream it from the index.
    """
    horizon = now_wall_ns - policy.retention_days * NS_PER_DAY
    need = bytes_to_free(policy, usage, extra_needed)
    plan = PurgePlan()
    for seg in oldest_first:
        if seg.end_wall_ns <= horizon:
            plan.by_age += 1
        elif plan.bytes < need:
            plan.by_space += 1
        else:
            break
        plan.bytes += seg.size
        if seg.sequence > plan.cutoffs.get(seg.camera_id, -1):
            plan.cutoffs[seg.camera_id] = seg.sequence
    return plan

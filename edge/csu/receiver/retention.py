"""Retention policy at the CSU, pure: which stored segments have outlived their time, and which
legal holds keep them.

The age of a segment is counted from the *earlier* of the end of its recording (the unit's
clock) and its arrival here (the CSU's clock): a unit whose clock runs ahead cannot make its
recordings outlive the limit, and a late backfill is still measured from when it was filmed.
A segment is kept past the limit only while an active legal hold covers its unit, camera and
time. Nothing here touches files: :mod:`.purge` is the I/O around it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .archive import StoredSegment
from .archive import ranges as ranges  # how deletion records name sequences

T = TypeVar("T")

DAY_NS = 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class Hold:
    """A legal hold: recordings of ``unit`` (one camera, or all when ``camera`` is None) between
    ``from_ns`` and ``to_ns`` are kept for proceedings ``case`` until released."""

    hold_id: str
    case: str
    unit: str
    camera: str | None
    from_ns: int
    to_ns: int
    placed_by: str
    placed_ns: int
    reason: str = ""

    def covers(self, unit: str, camera: str, meta: StoredSegment) -> bool:
        return (
            unit == self.unit
            and (self.camera is None or camera == self.camera)
            and meta.start_wall_ns <= self.to_ns
            and meta.end_wall_ns >= self.from_ns
        )

    def covers_instant(self, unit: str, camera: str, wall_ns: int) -> bool:
        """Whether the hold covers an event of ``camera`` at ``wall_ns``."""
        return (
            unit == self.unit
            and (self.camera is None or camera == self.camera)
            and self.from_ns <= wall_ns <= self.to_ns
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "hold_id": self.hold_id,
            "case": self.case,
            "unit": self.unit,
            "camera": self.camera,
            "from_ns": self.from_ns,
            "to_ns": self.to_ns,
            "placed_by": self.placed_by,
            "placed_ns": self.placed_ns,
            "reason": self.reason,
        }


def active_holds(entries: Iterable[dict[str, Any]]) -> dict[str, Hold]:
    """Fold the hold log (``add`` and ``release`` entries, in order) into the holds in force."""
    holds: dict[str, Hold] = {}
    for entry in entries:
        if entry.get("action") == "hold-add":
            hold = Hold(
                hold_id=str(entry["hold_id"]),
                case=str(entry["case"]),
                unit=str(entry["unit"]),
                camera=None if entry.get("camera") is None else str(entry["camera"]),
                from_ns=int(entry["from_ns"]),
                to_ns=int(entry["to_ns"]),
                placed_by=str(entry["who"]),
                placed_ns=int(entry["time_ns"]),
                reason=str(entry.get("reason", "")),
            )
            holds[hold.hold_id] = hold
        elif entry.get("action") == "hold-release":
            holds.pop(str(entry["hold_id"]), None)
    return holds


def released_holds(entries: Iterable[dict[str, Any]]) -> list[tuple[Hold, int]]:
    """Holds that were placed and later released, with the release time: a segment one of them
    covered was lawfully kept until then, and its deletion record says so."""
    placed = active_holds([])
    out: list[tuple[Hold, int]] = []
    for entry in entries:
        if entry.get("action") == "hold-add":
            placed.update(active_holds([entry]))
        elif entry.get("action") == "hold-release" and str(entry["hold_id"]) in placed:
            out.append((placed.pop(str(entry["hold_id"])), int(entry["time_ns"])))
    return out


def last_release(
    unit: str, camera: str, meta: StoredSegment, released: Sequence[tuple[Hold, int]]
) -> tuple[Hold, int] | None:
    """The latest release of a hold that covered ``meta`` (None: it was never held)."""
    covering = [(h, t) for h, t in released if h.covers(unit, camera, meta)]
    return max(covering, key=lambda ht: ht[1]) if covering else None


def age_basis_ns(meta: StoredSegment) -> int:
    """The instant a segment's age is counted from (see the module's docstring)."""
    return min(meta.end_wall_ns, meta.received_ns)


def expired(
    unit: str,
    camera: str,
    segments: Iterable[StoredSegment],
    holds: Sequence[Hold],
    *,
    now_ns: int,
    days: int,
) -> tuple[list[StoredSegment], list[StoredSegment]]:
    """``(to_delete, held)``: segments past ``days`` without a hold, and those a hold keeps."""
    limit = now_ns - days * DAY_NS
    to_delete: list[StoredSegment] = []
    held: list[StoredSegment] = []
    for meta in sorted(segments, key=lambda m: m.sequence):
        if age_basis_ns(meta) > limit:
            continue
        if any(h.covers(unit, camera, meta) for h in holds):
            held.append(meta)
        else:
            to_delete.append(meta)
    return to_delete, held


def event_expired(
    unit: str,
    camera: str,
    wall_ns: int,
    arrival_ns: int,
    holds: Sequence[Hold],
    *,
    now_ns: int,
    days: int,
) -> bool | Hold:
    """False: keep (young); True: delete; a :class:`Hold`: past the limit but held by it.
    Age from the earlier of the event's time and its arrival, as for segments."""
    if min(wall_ns, arrival_ns) > now_ns - days * DAY_NS:
        return False
    for hold in holds:
        if hold.covers_instant(unit, camera, wall_ns):
            return hold
    return True


def release_reason(hold: Hold, released_ns: int) -> dict[str, Any]:
    """What a deletion record says of the release that let its items go."""
    return {"hold_id": hold.hold_id, "case": hold.case, "released_ns": released_ns}


def by_release(
    unit: str, camera: str, gone: Iterable[StoredSegment], released: Sequence[tuple[Hold, int]]
) -> list[tuple[dict[str, Any] | None, list[StoredSegment]]]:
    """Segments to delete grouped by why their deletion comes now: the age alone (None), or
    the release of a hold that kept them until then (one group, one deletion record, per
    release). The embedded and the cluster purge both write one record per group."""
    groups: dict[str | None, tuple[dict[str, Any] | None, list[StoredSegment]]] = {}
    for meta in gone:
        last = last_release(unit, camera, meta, released)
        why = None if last is None else release_reason(*last)
        key = None if last is None else last[0].hold_id
        groups.setdefault(key, (why, []))[1].append(meta)
    return list(groups.values())


def event_release(
    unit: str, camera: str, wall_ns: int, released: Sequence[tuple[Hold, int]]
) -> dict[str, Any] | None:
    """The latest release of a hold that covered an event (None: it was never held)."""
    covering = [(h, t) for h, t in released if h.covers_instant(unit, camera, wall_ns)]
    return release_reason(*max(covering, key=lambda ht: ht[1])) if covering else None


def group_released_events(
    unit: str,
    scanned: Iterable[tuple[T, bytes, str, int, int, bool | Hold]],
    released: Sequence[tuple[Hold, int]],
) -> tuple[int, list[tuple[dict[str, Any] | None, list[tuple[T, str, int]]]]]:
    """Of a unit's events, each ``(ref, bytes, camera, time, arrival, verdict of
    event_expired)``, those past the limit grouped by the hold release that let them go (one
    deletion record per group: ``(why, [(ref, SHA-256, age basis), …])``), and how many a hold
    keeps. Both storage modes purge events through this one policy."""
    held = 0
    groups: dict[str | None, tuple[dict[str, Any] | None, list[tuple[T, str, int]]]] = {}
    for ref, raw, camera, wall, arrival, verdict in scanned:
        if verdict is False:
            continue
        if isinstance(verdict, Hold):
            held += 1
            continue
        why = event_release(unit, camera, wall, released)
        key = None if why is None else str(why["hold_id"])
        item = (ref, hashlib.sha256(raw).hexdigest(), min(wall, arrival))
        groups.setdefault(key, (why, []))[1].append(item)
    return held, list(groups.values())

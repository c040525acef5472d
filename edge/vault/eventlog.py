"""The vault's event log: every signed event (counts, rule alerts, tamper, unit alarms) and the
sealed snapshot of the alerts that have one, kept as evidence beside the recordings.

On disk, one file per event, named by the event's time (UTC) so that ``ls`` sorts them and
retention can drop whole hours::

    events/<camera>/<YYYY-MM-DD>/<HH>/<HHMMSS>.<mmm>-<event id>.evt   the signed wire form
    events/<camera>/<YYYY-MM-DD>/<HH>/<HHMMSS>.<mmm>-<event id>.snp   its sealed snapshot

The ``.evt`` file is exactly what the MQTT subscribers and the CSU receive (signed by edged with
the unit key); the ``.snp`` file is :mod:`edge.vault.snapshots` (encrypted to the CSU). Each is
written durably (temporary file, fsync, rename, fsync); the snapshot goes first, so an event
file never names a snapshot that a crash kept from being written. Unit alarms (door, 802.1X)
are filed under the camera name ``unit``.

Retention treats events like the segments of their camera: they go when older than
``retention_days``, and with the segments of their time when space runs short. What
verification sees: each event's signature, and each snapshot's; a deleted event file is only
visible against the CSU's copy (events reach it before any video).

Thread-safety: writers (the analytics bridges, the alarm threads) create distinct files and
share no state; the retention thread removes files older than the recordings it purges (past
hours, except when a full disk makes it purge up to recent ones: a writer whose new hour
directory was removed empty under it writes again, :meth:`edge.vault.store.Vault.record_event`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import IntegrityError
from . import files
from .recipient_keys import RecipientPublic
from .snapshots import seal_snapshot, verify_snapshot_file

if TYPE_CHECKING:
    from ..events import SignedEvent

log = logging.getLogger(__name__)

EVENTS_DIR = "events"
_NAME_RE = re.compile(r"^(\d{6})\.(\d{3})-([0-9A-Za-z-]{1,63})\.(evt|snp)\Z")
_CAMERA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
_HOUR_RE = re.compile(r"^\d{2}\Z")
_HOUR_NS = 3600 * 1_000_000_000


def event_path(root: Path, camera: str, wall_ns: int, event_id: str, ext: str = "evt") -> Path:
    """Where the vault rooted at ``root`` keeps an event (``ext`` "evt") or its snapshot."""
    if not _CAMERA_RE.match(camera):
        raise IntegrityError(f"event camera {camera!r} is not a valid name")
    if not re.fullmatch(r"[0-9A-Za-z-]{1,63}", event_id):
        raise IntegrityError(f"event id {event_id!r} is not valid")
    t = datetime.fromtimestamp(wall_ns / 1e9, tz=UTC)
    ms = (wall_ns // 1_000_000) % 1000
    return (
        root
        / EVENTS_DIR
        / camera
        / t.strftime("%Y-%m-%d")
        / t.strftime("%H")
        / f"{t:%H%M%S}.{ms:03d}-{event_id}.{ext}"
    )


def _hour_start_ns(day: str, hour: str) -> int:
    t = datetime.strptime(f"{day} {hour}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    return int(t.timestamp()) * 1_000_000_000


def _file_ns(day: str, name: str) -> int | None:
    m = _NAME_RE.match(name)
    if m is None:
        return None
    t = datetime.strptime(f"{day} {m.group(1)}", "%Y-%m-%d %H%M%S").replace(tzinfo=UTC)
    return int(t.timestamp()) * 1_000_000_000 + int(m.group(2)) * 1_000_000


def cameras(root: Path) -> list[str]:
    base = root / EVENTS_DIR
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and _CAMERA_RE.match(p.name))


def _hours(root: Path, camera: str) -> Iterable[tuple[str, int, Path]]:
    """(day, hour start ns, directory) of a camera's events, oldest first."""
    base = root / EVENTS_DIR / camera
    if not base.is_dir():
        return
    for day in sorted(p for p in base.iterdir() if _DAY_RE.match(p.name) and p.is_dir()):
        for hour in sorted(p for p in day.iterdir() if _HOUR_RE.match(p.name) and p.is_dir()):
            yield day.name, _hour_start_ns(day.name, hour.name), hour


@dataclass(frozen=True, slots=True)
class StoredEvent:
    camera: str
    wall_ns: int
    path: Path
    raw: bytes
    body: dict[str, Any] | None
    """The verified body; None when the file does not verify (``problem`` says why)."""
    problem: str | None = None
    snapshot: Path | None = None
    """The sealed snapshot's file, when the event names one and it is there."""
    snapshot_problem: str | None = None
    """Why the snapshot the event names is missing or does not verify."""


def files_of(
    root: Path,
    event: SignedEvent,
    *,
    device_id: str,
    recipients: list[RecipientPublic],
    signing_key: ed25519.Ed25519PrivateKey,
) -> list[tuple[Path, bytes]]:
    """The files that keep ``event`` (snapshot first), to be written in this order."""
    body = event.body
    camera, wall_ns, event_id = str(body["camera"]), int(body["wall_ns"]), str(body["id"])
    out: list[tuple[Path, bytes]] = []
    if event.snapshot is not None:
        sealed = seal_snapshot(
            event.snapshot,
            device_id=device_id,
            camera_id=camera,
            event_id=event_id,
            wall_ns=wall_ns,
            recipients=recipients,
            signing_key=signing_key,
        )
        out.append((event_path(root, camera, wall_ns, event_id, "snp"), sealed))
    out.append((event_path(root, camera, wall_ns, event_id), event.wire()))
    return out


def read_events(
    root: Path,
    public_key: ed25519.Ed25519PublicKey,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    only: Iterable[str] | None = None,
    device_id: str | None = None,
) -> list[StoredEvent]:
    """The events of [start_ns, end_ns) (all when None), of the cameras ``only`` (all when
    None), oldest first, each verified with the unit's key."""
    from ..events import verify_wire  # local: edge.events pulls in numpy and PIL

    lo = start_ns if start_ns is not None else -(1 << 62)
    hi = end_ns if end_ns is not None else 1 << 62
    wanted = set(only) if only is not None else None
    out: list[StoredEvent] = []
    for camera in cameras(root):
        if wanted is not None and camera not in wanted:
            continue
        for day, hour_ns, hour_dir in _hours(root, camera):
            if hour_ns >= hi or hour_ns + _HOUR_NS <= lo:
                continue
            for path in sorted(hour_dir.glob("*.evt")):
                ns = _file_ns(day, path.name)
                if ns is None or not lo <= ns < hi:
                    continue
                out.append(_read_one(path, camera, ns, public_key, device_id, verify_wire))
    out.sort(key=lambda e: (e.wall_ns, e.path.name))
    return out


def _read_one(
    path: Path,
    camera: str,
    ns: int,
    public_key: ed25519.Ed25519PublicKey,
    device_id: str | None,
    verify_wire: Any,
) -> StoredEvent:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return StoredEvent(camera, ns, path, b"", None, f"unreadable: {exc.strerror}")
    try:
        body: dict[str, Any] = verify_wire(raw, public_key)
    except IntegrityError as exc:
        return StoredEvent(camera, ns, path, raw, None, str(exc))
    m = _NAME_RE.match(path.name)
    if (
        body.get("camera") != camera
        or (m is not None and body.get("id") != m.group(3))
        or (device_id is not None and body.get("unit") != device_id)
    ):
        return StoredEvent(camera, ns, path, raw, None, "signed event filed at another place")
    if not isinstance(body.get("snapshot"), dict):
        return StoredEvent(camera, ns, path, raw, body)
    snp = path.with_suffix(".snp")
    try:
        sealed = verify_snapshot_file(snp.read_bytes(), public_key)
    except FileNotFoundError:
        return StoredEvent(camera, ns, path, raw, body, None, None, "snapshot missing")
    except (OSError, IntegrityError) as exc:
        return StoredEvent(camera, ns, path, raw, body, None, None, f"snapshot: {exc}")
    if sealed.event_id != body.get("id") or sealed.camera_id != camera:
        return StoredEvent(camera, ns, path, raw, body, None, None, "snapshot of another event")
    return StoredEvent(camera, ns, path, raw, body, snapshot=snp)


def purge(root: Path, cutoffs: dict[str, int], default_cutoff: int) -> int:
    """Remove every event file (and snapshot) older than its camera's cutoff (ns): the value
    in ``cutoffs``, or ``default_cutoff``, whichever is later. Returns the files removed."""
    removed = 0
    for camera in cameras(root):
        cutoff = max(default_cutoff, cutoffs.get(camera, default_cutoff))
        for day, hour_ns, hour_dir in list(_hours(root, camera)):
            if hour_ns >= cutoff:
                break
            for path in sorted(hour_dir.iterdir()):
                ns = _file_ns(day, path.name)
                if ns is not None and ns < cutoff:
                    files.unlink_pruning(path)
                    removed += 1
    return removed

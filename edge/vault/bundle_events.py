"""The events of an evidence bundle: exported from the vault's event log with the segments,
checked by :func:`edge.vault.bundle.verify_bundle`, and opened at the CSU.

In the bundle, beside the segments::

    events/<camera>/<time>-<event id>.evt     signed events, exactly as the vault holds them
    events/<camera>/<time>-<event id>.snp     their sealed snapshots

and in the signed manifest, ``events``: one entry per event (camera, id, time_ns, category,
kind, file, sha256, size, and ``snapshot`` {file, sha256, size} when it has one). An event
that does not verify on the unit is not exported; it is named in ``events_damaged`` (file,
detail), so the bundle says what it leaves out. Unit alarms (camera ``unit``: cabinet door,
802.1X) go with any camera selection: they are the context of every camera's recording. A CSU
bundle carries the events the CSU received and the snapshots the unit sent it, in the same
manifest form; an event whose snapshot the CSU lacks says so, with why, in
``snapshot_not_held``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import IntegrityError
from .eventlog import read_events
from .recipient_keys import RecipientPrivate
from .snapshots import SealedSnapshot, open_snapshot, verify_snapshot_file


def _copy(src: Path, dest: Path) -> tuple[str, int]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    data = dest.read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


def export_events(
    root: Path,
    out: Path,
    *,
    start_ns: int,
    end_ns: int,
    cameras: list[str] | None,
    public_key: ed25519.Ed25519PublicKey,
    device_id: str,
) -> tuple[list[dict[str, Any]], list[dict[str, str]], int]:
    """Copy the events of the range into the bundle directory ``out``: (manifest entries,
    damaged entries, bytes)."""
    only = None if cameras is None else [*cameras, "unit"]
    entries: list[dict[str, Any]] = []
    damaged: list[dict[str, str]] = []
    total = 0
    stored = read_events(
        root, public_key, start_ns=start_ns, end_ns=end_ns, only=only, device_id=device_id
    )
    for ev in stored:
        rel = ev.path.relative_to(root).as_posix()
        if ev.body is None:
            damaged.append({"file": rel, "detail": ev.problem or "does not verify"})
            continue
        name = f"events/{ev.camera}/{ev.path.name}"
        digest, size = _copy(ev.path, out / name)
        total += size
        entry: dict[str, Any] = {
            "camera": ev.camera,
            "id": ev.body["id"],
            "time_ns": ev.body["wall_ns"],
            "category": ev.body["category"],
            "kind": ev.body["kind"],
            "file": name,
            "sha256": digest,
            "size": size,
        }
        if ev.snapshot is not None:
            snp_name = f"events/{ev.camera}/{ev.snapshot.name}"
            snp_digest, snp_size = _copy(ev.snapshot, out / snp_name)
            total += snp_size
            entry["snapshot"] = {"file": snp_name, "sha256": snp_digest, "size": snp_size}
        elif ev.snapshot_problem is not None:
            damaged.append({"file": rel, "detail": ev.snapshot_problem})
        entries.append(entry)
    return entries, damaged, total


@dataclass(frozen=True, slots=True)
class BundleEvent:
    body: dict[str, Any]
    wire: bytes
    snapshot: SealedSnapshot | None


def verify_events(
    bundle: Path,
    manifest: dict[str, Any],
    key: ed25519.Ed25519PublicKey,
    device: str,
    listed: set[str],
    read_listed: Any,
) -> tuple[BundleEvent, ...]:
    """Every event the manifest lists, verified (signature, place, snapshot); ``listed``
    gains their files. Bundles made before events were exported have none."""
    from ..events import verify_wire  # local: edge.events pulls in numpy and PIL

    entries = manifest.get("events", [])
    if not isinstance(entries, list):
        raise IntegrityError("manifest: events has the wrong type")
    out = []
    for i, entry in enumerate(entries):
        where = f"events[{i}]."
        wire = read_listed(bundle, entry, where)
        try:
            body = verify_wire(wire, key)
        except IntegrityError as exc:
            raise IntegrityError(f"{entry.get('file')}: {exc}") from None
        if (
            body.get("unit") != device
            or body.get("camera") != entry.get("camera")
            or body.get("id") != entry.get("id")
            or body.get("wall_ns") != entry.get("time_ns")
        ):
            raise IntegrityError(f"{entry['file']}: event does not match the manifest")
        listed.add(entry["file"])
        snapshot = None
        ref = entry.get("snapshot")
        if ref is not None:
            snapshot = verify_snapshot_file(read_listed(bundle, ref, where + "snapshot."), key)
            if (snapshot.event_id, snapshot.device_id, snapshot.camera_id) != (
                body["id"],
                device,
                body["camera"],
            ):
                raise IntegrityError(f"{ref.get('file')}: snapshot of another event")
            listed.add(ref["file"])
        elif isinstance(body.get("snapshot"), dict) and not isinstance(
            entry.get("snapshot_not_held"), str
        ):
            # Only a CSU bundle may say so (a snapshot the unit has not sent it), and says why.
            raise IntegrityError(f"{entry['file']}: its snapshot is not in the bundle")
        out.append(BundleEvent(body, wire, snapshot))
    return tuple(out)


def open_events(events: tuple[BundleEvent, ...], private: RecipientPrivate, out_dir: Path) -> int:
    """Write ``events.jsonl`` (the signed wire forms) and each snapshot as
    ``<event id>.jpg`` into ``out_dir``, each JPEG checked against its signed event.
    Returns the snapshots written."""
    from ..events import verify_snapshot

    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(json.loads(ev.wire), ensure_ascii=False) for ev in events]
    (out_dir / "events.jsonl").write_text("".join(line + "\n" for line in lines))
    count = 0
    for ev in events:
        if ev.snapshot is None:
            continue
        jpeg = open_snapshot(ev.snapshot, private)
        verify_snapshot(ev.body, jpeg)
        (out_dir / f"{ev.body['id']}.jpg").write_bytes(jpeg)
        count += 1
    return count

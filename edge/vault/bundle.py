"""Evidence bundles: export a time range from the vault, verify and open it at the CSU.

A bundle is a directory::

    manifest.json          what the bundle holds (files with SHA-256 and size, ranges, case)
    manifest.sig           Ed25519 over b"edge-bundle-v1\\0" || SHA-256(manifest.json)
    unit-signing.pub.pem   the unit's verification key (also inside the manifest)
    certs/                 when enrolled: unit-signing.crt (the evidence-signing certificate
                           of the key above), ca.pem (the city CA chain), unit-tls.crt
    segments/<camera>/<sequence>.seg     sealed segments, exactly as the vault holds them
    epochs/<camera>/<epoch id>.env       the epoch key envelopes they need
    events/<camera>/<time>-<id>.evt|snp  signed events of the range, sealed snapshots
                                         (:mod:`edge.vault.bundle_events`)

Nothing is decrypted or re-encrypted on export: the unit cannot read its own past, and the
CSU verifies exactly the bytes that were recorded. What is not intact in the range (a segment
missing, altered, without its epoch envelope, or out of chain) does not stop the export: it is
named in the signed manifest (``damaged``, ``partial``) and the rest is exported; the verifier
accepts a hole or a chain break only where the manifest declares it, and reports every declared
part. :func:`verify_bundle` checks everything (signature of the manifest, every digest, every
segment signature, the chain, envelopes) and names the first problem; :func:`open_bundle` then
decrypts with a recipient private key and remuxes into one MP4.

Verification never trusts the key inside the bundle on its own: the caller gives a trust anchor,
either the fleet CA (the bundle's ``unit-signing.crt`` must certify the signing key for this
unit at the time of the recording, :mod:`edge.identity.evidence`) or a pinned unit key, or says
explicitly that the bundle's own key is to be trusted (demos).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.identity import evidence
from edge.identity.unitkeys import (
    CA_CHAIN_NAME,
    SIGNING_CERT_NAME,
    SIGNING_PUB_NAME,
    TLS_CERT_NAME,
    key_id,
    keys_dir_of,
    load_public_pem,
    public_pem,
    public_raw,
)
from edge.privacy.commitment import MaskSet
from edge.vault import chain, layout, maskhistory
from edge.vault import receipt as rcpt
from edge.vault.recipient_keys import RecipientPrivate, decrypt_segment, open_envelope

from ..errors import IntegrityError, VaultError
from ..fsutil import fsync_dir
from . import format as fmt
from .audit import AuditLog, current_actor
from .bundle_events import BundleEvent, export_events, verify_events
from .index import Index
from .remux import TimeGap, closing_seis, remux

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "edge-evidence-bundle"
_DOMAIN = b"edge-bundle-v1\0"


class DamageKind(StrEnum):
    MISSING = "missing"
    """Not in the vault any more (no file, or no index row: a hole in the sequence)."""
    ALTERED = "altered"
    """The file fails verification (signature, format, header not matching its place)."""
    NO_ENVELOPE = "no-envelope"
    """Intact, but its epoch envelope is missing or damaged: nobody could open it."""
    CHAIN = "chain-broken"
    """Authentic and included, but it does not continue the segment before it."""


_EXCLUDED = frozenset({DamageKind.MISSING, DamageKind.ALTERED, DamageKind.NO_ENVELOPE})


@dataclass(frozen=True, slots=True)
class DamagedPart:
    """A run of one camera's sequences an export could not carry intact (named in the manifest).

    ``chain-broken`` segments are in the bundle; the other kinds are not.
    """

    camera: str
    first_sequence: int
    last_sequence: int
    kind: DamageKind
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "camera": self.camera,
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "kind": self.kind.value,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        seqs = f"#{self.first_sequence}"
        if self.last_sequence != self.first_sequence:
            seqs += f"..#{self.last_sequence}"
        where = "in the bundle" if self.kind is DamageKind.CHAIN else "not in the bundle"
        return f"{self.camera} {seqs}: {self.kind.value} ({where}): {self.detail}"


@dataclass(frozen=True, slots=True)
class ExportResult:
    path: Path
    segments: int
    envelopes: int
    bytes: int
    digest: str
    """SHA-256 of manifest.json: the bundle's identity in the audit log."""
    certified: bool = False
    """The bundle carries the evidence-signing certificate (verifiable with the fleet CA)."""
    damaged: tuple[DamagedPart, ...] = ()
    """What of the range could not be exported intact; empty for a complete export."""
    gaps: tuple[str, ...] = ()
    """Losses the range covers, each proven by a signed gap record carried in the bundle."""
    events: int = 0
    """Signed events (counts, alerts, alarms) carried in the bundle."""
    snapshots: int = 0
    events_damaged: tuple[str, ...] = ()
    """Events of the range that did not verify on the unit, left out ("file: why")."""

    @property
    def partial(self) -> bool:
        return bool(self.damaged or self.events_damaged)


def _copy(src: Path, dest: Path) -> tuple[str, int]:
    data = src.read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return hashlib.sha256(data).hexdigest(), len(data)


class _Damage:
    """Damaged parts in the order found, contiguous runs of the same kind and cause merged."""

    def __init__(self) -> None:
        self.parts: list[DamagedPart] = []

    def add(self, camera: str, first: int, last: int, kind: DamageKind, detail: str) -> None:
        if self.parts:
            p = self.parts[-1]
            if (p.camera, p.kind, p.detail) == (
                camera,
                kind,
                detail,
            ) and p.last_sequence + 1 == first:
                self.parts[-1] = DamagedPart(camera, p.first_sequence, last, kind, detail)
                return
        self.parts.append(DamagedPart(camera, first, last, kind, detail))


def export_bundle(
    data_dir: Path,
    *,
    start_ns: int,
    end_ns: int,
    case: str,
    out_dir: Path,
    device_id: str,
    signing_key: ed25519.Ed25519PrivateKey,
    cameras: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    actor: str | None = None,
) -> ExportResult:
    """Write an evidence bundle of [start_ns, end_ns) to ``out_dir`` and audit the export.

    What is intact is exported; what is not (missing, altered, unopenable, out of chain) is named
    in the signed manifest and in :attr:`ExportResult.damaged`. A failed or interrupted export is
    audited too (``export-failed``, ``export-aborted``) and leaves no bundle behind; a bundle is
    only put in place once its ``export`` record is in the audit log.
    """
    root = layout.vault_dir(data_dir)
    if not (root / "index.sqlite").exists():
        raise VaultError(
            f"{root}: no vault here: is this the unit's configuration (--config, "
            "--data-dir)? edged creates the vault at its first start"
        )
    audit = AuditLog(root / "audit.log", device_id, signing_key)
    partial = out_dir.with_name(out_dir.name + ".partial")
    try:
        return _export(
            data_dir,
            root,
            audit,
            partial,
            start_ns=start_ns,
            end_ns=end_ns,
            case=case,
            out_dir=out_dir,
            device_id=device_id,
            signing_key=signing_key,
            cameras=cameras,
            progress=progress,
            actor=actor,
        )
    except BaseException as exc:
        aborted = not isinstance(exc, Exception)  # Ctrl-C, SIGTERM through SystemExit
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
        details = {
            "case": case,
            "from_ns": start_ns,
            "to_ns": end_ns,
            "cameras": sorted(cameras) if cameras is not None else None,
            "out": str(out_dir),
            "reason": str(exc) or type(exc).__name__,
        }
        try:
            audit.append("export-aborted" if aborted else "export-failed", details, actor=actor)
        except (OSError, VaultError) as audit_exc:  # the export's own error is the one to raise
            log.error("failed export not recorded in the audit log: %s", audit_exc)
        raise


def _export(
    data_dir: Path,
    root: Path,
    audit: AuditLog,
    partial: Path,
    *,
    start_ns: int,
    end_ns: int,
    case: str,
    out_dir: Path,
    device_id: str,
    signing_key: ed25519.Ed25519PrivateKey,
    cameras: list[str] | None,
    progress: Callable[[int, int], None] | None,
    actor: str | None,
) -> ExportResult:
    if not case.strip():
        raise VaultError("a case reference is required")
    if not out_dir.parent.is_dir():
        # Never created: with a USB stick not mounted, its mount point's parents would be made
        # on the unit's own card and the evidence would stay there.
        raise VaultError(
            f"{out_dir.parent}: no such directory — is the stick mounted? (only the bundle "
            "directory itself is created, never its parents)"
        )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise VaultError(f"{out_dir}: exists and is not empty")
    public_key = signing_key.public_key()
    index = Index(root / "index.sqlite", readonly=True)
    try:
        rows = [
            r for r in index.range(start_ns, end_ns) if cameras is None or r.camera_id in cameras
        ]
        epochs = {
            (r.camera_id, r.epoch_id): index.epoch_created(r.camera_id, r.epoch_id) for r in rows
        }
    finally:
        index.close()
    if not rows:
        raise VaultError("no recording in that range")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    damage = _Damage()
    env_files: dict[tuple[str, bytes], Path] = {}
    unopenable: dict[tuple[str, bytes], str] = {}
    for (camera, epoch_id), created in sorted(epochs.items()):
        if created is None:
            unopenable[(camera, epoch_id)] = f"epoch {epoch_id.hex()}: no envelope in the index"
            continue
        src = layout.envelope_path(root, camera, created, epoch_id)
        try:
            fmt.verify_envelope(src.read_bytes(), public_key)
        except FileNotFoundError:
            unopenable[(camera, epoch_id)] = f"epoch {epoch_id.hex()}: envelope missing"
            continue
        except (IntegrityError, OSError) as exc:
            unopenable[(camera, epoch_id)] = f"epoch {epoch_id.hex()}: envelope damaged: {exc}"
            continue
        env_files[(camera, epoch_id)] = src
    seg_entries: list[dict[str, Any]] = []
    cam_info: dict[str, dict[str, Any]] = {}
    prev: dict[str, fmt.SealedSegment] = {}
    seen: dict[str, int] = {}
    gap_records = _gaps_in_range(root, rows, start_ns, end_ns, public_key, device_id, damage)
    gaps_used: dict[tuple[str, int], fmt.GapRecord] = {}
    committed_sets: set[maskhistory.SetKey] = set()
    total = len(rows) + len(env_files)
    done = 0
    size_sum = 0
    for row in rows:
        cam, seq = row.camera_id, row.sequence
        done += 1
        if progress:
            progress(done, total)
        if cam in seen and seq > seen[cam] + 1:
            lost = seen[cam] + 1
            while (gap := gap_records.get(cam, {}).get(lost)) is not None and gap.last < seq:
                lost = gap.last + 1  # lost at the unit and recorded: a gap record, not damage
            if lost < seq:
                damage.add(cam, lost, seq - 1, DamageKind.MISSING, "no longer in the vault")
        seen[cam] = seq
        if (cam, row.epoch_id) in unopenable:
            damage.add(cam, seq, seq, DamageKind.NO_ENVELOPE, unopenable[(cam, row.epoch_id)])
            continue
        src = layout.segment_path(root, cam, row.start_wall_ns, seq)
        try:
            raw = src.read_bytes()
        except FileNotFoundError:
            damage.add(cam, seq, seq, DamageKind.MISSING, "file missing (deleted or purged)")
            continue
        except OSError as exc:
            damage.add(cam, seq, seq, DamageKind.ALTERED, f"unreadable: {exc.strerror}")
            continue
        try:
            seg = fmt.verify_segment(raw, public_key, device_id=device_id)
        except IntegrityError as exc:
            damage.add(cam, seq, seq, DamageKind.ALTERED, str(exc))
            continue
        h = seg.header
        if (h.camera_id, h.sequence, h.epoch_id) != (cam, seq, row.epoch_id):
            damage.add(cam, seq, seq, DamageKind.ALTERED, "header does not match its place")
            continue
        before = prev.get(cam)
        if before is not None:
            # Through the signed records of sequences lost between two exported segments.
            walk = chain.through_gaps(
                gap_records.get(cam, {}), before.header.sequence + 1, before.chain_hash
            )
            gaps_used.update({(cam, gap.first): gap for gap in walk.crossed})
            if walk.sequence == seq and h.prev_hash != walk.prev_hash:
                damage.add(
                    cam,
                    seq,
                    seq,
                    DamageKind.CHAIN,
                    f"does not continue #{before.header.sequence} (replaced or reordered)",
                )
        prev[cam] = seg
        committed_sets.update((cam, m.committed.mask_set) for m in h.masks)
        name = f"segments/{cam}/{seq:010d}.seg"
        digest, size = _copy(src, partial / name)
        size_sum += size
        cam_info.setdefault(cam, {"first_sequence": seq, "prev_hash": h.prev_hash.hex()})[
            "last_sequence"
        ] = seq
        seg_entries.append(
            {
                "camera": h.camera_id,
                "sequence": seq,
                "start_ns": h.start_wall_ns,
                "end_ns": h.end_wall_ns,
                "frames": h.frame_count,
                "epoch": h.epoch_id.hex(),
                "file": name,
                "sha256": digest,
                "size": size,
            }
        )
    for camera, cam_gaps in gap_records.items():
        for gap in cam_gaps.values():  # losses at the edges of the range are named too
            gaps_used.setdefault((camera, gap.first), gap)
    gap_entries: list[dict[str, Any]] = []
    for (camera, first), gap in sorted(gaps_used.items()):
        name = f"gaps/{camera}/{first:010d}-{gap.last:010d}.gap"
        digest, size = _copy(layout.gap_path(root, camera, first, gap.last), partial / name)
        gap_entries.append(
            {
                "camera": camera,
                "first_sequence": first,
                "last_sequence": gap.last,
                "after_ns": gap.after_wall_ns,
                "recorded_ns": gap.created_wall_ns,
                "reason": gap.reason,
                "file": name,
                "sha256": digest,
                "size": size,
            }
        )
    if not seg_entries:
        raise IntegrityError(
            "nothing intact to export in that range: "
            + "; ".join(str(p) for p in damage.parts[:3])
            + " (run edgectl verify)"
        )
    tail_entries = _export_tails(root, prev, env_files, public_key, device_id, partial)
    needed = {(e["camera"], bytes.fromhex(e["epoch"])) for e in [*seg_entries, *tail_entries]}
    env_entries: list[dict[str, Any]] = []
    for (camera, epoch_id), src in sorted(env_files.items()):
        if (camera, epoch_id) not in needed:
            continue
        name = f"epochs/{camera}/{epoch_id.hex()}.env"
        digest, size = _copy(src, partial / name)
        size_sum += size
        env_entries.append(
            {
                "camera": camera,
                "epoch": epoch_id.hex(),
                "file": name,
                "sha256": digest,
                "size": size,
            }
        )
        done += 1
        if progress:
            progress(done, total)
    mask_entries = _export_mask_sets(audit, public_key, committed_sets, partial)
    receipt_entries = _export_receipts(root, device_id, seg_entries, partial)
    event_entries, events_damaged, event_bytes = export_events(
        root,
        partial,
        start_ns=start_ns,
        end_ns=end_ns,
        cameras=cameras,
        public_key=public_key,
        device_id=device_id,
    )
    size_sum += event_bytes
    pem = public_pem(public_key)
    (partial / SIGNING_PUB_NAME).write_bytes(pem)
    certs: list[dict[str, Any]] = []
    certified = evidence.certifies(keys_dir_of(data_dir) / SIGNING_CERT_NAME, public_key)
    names = [SIGNING_CERT_NAME] if certified else []
    for cert in [*names, CA_CHAIN_NAME, TLS_CERT_NAME]:
        src = keys_dir_of(data_dir) / cert
        if src.exists():
            digest, size = _copy(src, partial / "certs" / cert)
            certs.append({"file": f"certs/{cert}", "sha256": digest, "size": size})
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": 1,
        "case": case,
        "device": device_id,
        "created_ns": time.time_ns(),
        "exported_by": actor if actor is not None else current_actor(),
        "range": {"from_ns": start_ns, "to_ns": end_ns},
        "unit_public_key": pem.decode(),
        "unit_key_id": key_id(public_raw(public_key)),
        "cameras": cam_info,
        "segments": seg_entries,
        # Per camera, the segment after the last exported one, when the vault holds it: its
        # first access unit carries the Media Signing SEI of the range's last GOP.
        "tail": tail_entries,
        "envelopes": env_entries,
        "gaps": gap_entries,
        # The signed record (polygons) of each mask set the segments commit to.
        "mask_sets": mask_entries,
        # The CSU's signed receipts of exported segments, as the unit kept them.
        "receipts": receipt_entries,
        "events": event_entries,
        "events_damaged": events_damaged,
        "certificates": certs,
        # Where the certificate of unit_public_key is, or null: then only a pinned key verifies.
        "signing_certificate": f"certs/{SIGNING_CERT_NAME}" if certified else None,
        # What of the range is not here intact, and why: a partial export says so, signed.
        "partial": bool(damage.parts),
        "damaged": [p.as_dict() for p in damage.parts],
    }
    body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    (partial / "manifest.json").write_bytes(body)
    (partial / "manifest.sig").write_bytes(
        signing_key.sign(_DOMAIN + hashlib.sha256(body).digest())
    )
    for path in (partial / "manifest.json", partial / "manifest.sig"):
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
    digest = hashlib.sha256(body).hexdigest()
    # Audited before it is put in place: no bundle ever leaves without its record.
    audit.append(
        "export",
        {
            "case": case,
            "from_ns": start_ns,
            "to_ns": end_ns,
            "cameras": sorted(cam_info),
            "segments": len(seg_entries),
            "bytes": size_sum,
            "bundle_sha256": digest,
            "out": str(out_dir),
            "partial": bool(damage.parts),
            "damaged": [
                {k: v for k, v in p.as_dict().items() if k != "detail"} for p in damage.parts
            ],
            "gaps": [[g["camera"], g["first_sequence"], g["last_sequence"]] for g in gap_entries],
            "events": len(event_entries),
            "events_damaged": len(events_damaged),
        },
        actor=actor,
    )
    partial.rename(out_dir)
    fsync_dir(out_dir.parent)
    described = tuple(
        f"{camera}: {gap.describe()}" for (camera, _), gap in sorted(gaps_used.items())
    )
    return ExportResult(
        out_dir,
        len(seg_entries),
        len(env_entries),
        size_sum,
        digest,
        certified,
        damaged=tuple(damage.parts),
        gaps=described,
        events=len(event_entries),
        snapshots=sum(1 for e in event_entries if "snapshot" in e),
        events_damaged=tuple(f"{d['file']}: {d['detail']}" for d in events_damaged),
    )


def _export_tails(
    root: Path,
    last: dict[str, fmt.SealedSegment],
    env_files: dict[tuple[str, bytes], Path],
    public_key: ed25519.Ed25519PublicKey,
    device_id: str,
    partial: Path,
) -> list[dict[str, Any]]:
    """Per camera, the segment that continues the last exported one (next sequence, linked to
    it, intact, its envelope at hand), copied under ``tail/``; none where the recording ended
    there or the next segment is not intact (the clip then keeps its dangling end).

    Carried for one reason: the ONVIF Media Signing SEI that signs the last GOP of the range
    sits in that segment's first access unit (``edge-csu open`` moves it into the clip)."""
    index = Index(root / "index.sqlite", readonly=True)
    try:
        rows = {cam: index.get(cam, seg.header.sequence + 1) for cam, seg in last.items()}
    finally:
        index.close()
    entries: list[dict[str, Any]] = []
    for cam, row in sorted(rows.items()):
        if row is None or (cam, row.epoch_id) not in env_files:
            continue
        src = layout.segment_path(root, cam, row.start_wall_ns, row.sequence)
        try:
            seg = fmt.verify_segment(src.read_bytes(), public_key, device_id=device_id)
        except (OSError, IntegrityError) as exc:
            log.warning("%s#%d: next segment not carried: %s", cam, row.sequence, exc)
            continue
        h = seg.header
        if (h.camera_id, h.sequence) != (cam, row.sequence) or (
            h.prev_hash != last[cam].chain_hash
        ):
            continue
        name = f"tail/{cam}/{h.sequence:010d}.seg"
        digest, size = _copy(src, partial / name)
        entries.append(
            {
                "camera": cam,
                "sequence": h.sequence,
                "start_ns": h.start_wall_ns,
                "end_ns": h.end_wall_ns,
                "frames": h.frame_count,
                "epoch": h.epoch_id.hex(),
                "file": name,
                "sha256": digest,
                "size": size,
            }
        )
    return entries


def _export_mask_sets(
    audit: AuditLog,
    public_key: ed25519.Ed25519PublicKey,
    wanted: set[maskhistory.SetKey],
    partial: Path,
) -> list[dict[str, Any]]:
    """Copy the signed ``mask-set`` record of each committed set into the bundle; a set whose
    record is gone is left out (the verifier then reports its polygons as unknown)."""
    entries: list[dict[str, Any]] = []
    for (camera, digest), line in sorted(
        maskhistory.records_for(audit.path, public_key, wanted).items()
    ):
        name = maskhistory.mask_file(camera, digest)
        dest = partial / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        entries.append(
            {
                "camera": camera,
                "digest": digest.hex(),
                "file": name,
                "sha256": hashlib.sha256(line).hexdigest(),
                "size": len(line),
            }
        )
    return entries


def _export_receipts(
    root: Path, device_id: str, seg_entries: list[dict[str, Any]], partial: Path
) -> list[dict[str, Any]]:
    """One file per camera: the receipts the unit holds of the exported segments (checked when
    they arrived; the verifier checks them again against the CSU key it trusts)."""
    log_ = rcpt.ReceiptLog(root)
    entries: list[dict[str, Any]] = []
    for camera in sorted({e["camera"] for e in seg_entries}):
        mine = [e for e in seg_entries if e["camera"] == camera]
        wanted = {e["sequence"] for e in mine}
        days = {rcpt.day_of(e["start_ns"]) for e in mine}
        kept = []
        for raw in log_.read(camera, days):
            try:
                r = rcpt.parse_receipt(raw)
            except IntegrityError:
                continue  # not a receipt: nothing to carry
            if r.device_id == device_id and r.camera_id == camera and r.sequence in wanted:
                kept.append(raw)
        if not kept:
            continue
        name = f"receipts/{camera}.rcl"
        data = b"".join(rcpt.frame_record(raw) for raw in kept)
        dest = partial / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        entries.append(
            {
                "camera": camera,
                "count": len(kept),
                "file": name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }
        )
    return entries


def _gaps_in_range(
    root: Path,
    rows: Sequence[Any],
    start_ns: int,
    end_ns: int,
    public_key: ed25519.Ed25519PublicKey,
    device_id: str,
    damage: _Damage,
) -> dict[str, dict[int, fmt.GapRecord]]:
    """Per exported camera, its gap records that touch the range: between two exported
    segments, or a loss that lies in it (after ``after_wall_ns``, before it was recorded)."""
    by_cam: dict[str, list[Any]] = {}
    for r in rows:
        by_cam.setdefault(r.camera_id, []).append(r)
    out: dict[str, dict[int, fmt.GapRecord]] = {}
    for camera, cam_rows in by_cam.items():
        lo, hi = cam_rows[0].sequence, cam_rows[-1].sequence
        for path in layout.gap_files(root, camera):
            try:
                gap = fmt.verify_gap(path.read_bytes(), public_key)
                if gap.device_id != device_id or gap.camera_id != camera:
                    raise IntegrityError(f"{path}: gap record of another unit or camera")
            except (IntegrityError, OSError) as exc:
                # Not carried: the sequences it would cover show as a hole, declared as damage.
                log.error("%s: gap record not exported: %s", path, exc)
                continue
            inside = lo < gap.first and gap.last < hi
            overlaps = gap.after_wall_ns < end_ns and gap.created_wall_ns > start_ns
            if inside or overlaps:
                out.setdefault(camera, {})[gap.first] = gap
    return out


# --- CSU side ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    path: Path
    manifest: dict[str, Any]
    segments: list[fmt.SealedSegment]
    envelopes: dict[tuple[str, bytes], fmt.EpochEnvelope]
    public_key: ed25519.Ed25519PublicKey
    trust: str = ""
    """What vouches for ``public_key``: the fleet CA, a pinned key, or nothing (demo)."""
    certificate: x509.Certificate | None = None
    """The evidence-signing certificate checked against the fleet CA, if that was the anchor."""
    damaged: tuple[DamagedPart, ...] = ()
    """What the signed manifest says the export could not carry intact (a partial bundle)."""
    gaps: tuple[fmt.GapRecord, ...] = ()
    """Signed records of sequences the unit lost: the chain goes on through them, and they
    are reported with the bundle (never hidden)."""
    mask_sets: Mapping[maskhistory.SetKey, MaskSet] = dataclasses.field(default_factory=dict)
    """The mask sets the bundle carries signed records of (polygons checked against digests)."""

    receipts: tuple[rcpt.Receipt, ...] = ()
    """The CSU's receipts the bundle carries; checked only when ``receipts_checked``."""
    receipts_checked: bool = False
    """True when every receipt was checked against the CSU receipt key given to the verifier."""

    def receipt_coverage(self) -> list[rcpt.Coverage]:
        """Per segment, the checked receipt anchoring it (its own, or a later one's chain)."""
        checked = list(self.receipts) if self.receipts_checked else []
        return rcpt.coverage(self.segments, checked)

    def mask_timeline(self) -> list[maskhistory.MaskSpan]:
        """Which masks held over which span of each camera's recording."""
        return maskhistory.timeline(self.segments, self.mask_sets)

    events: tuple[BundleEvent, ...] = ()
    """The signed events of the range (and their sealed snapshots), verified."""
    seal: str = ""
    """Who sealed the manifest, for people; empty: the unit (an ``edgectl export`` bundle)."""
    tails: Mapping[str, fmt.SealedSegment] = dataclasses.field(default_factory=dict)
    """Per camera, the segment after the last one of the range (only its first access unit is
    used: the Media Signing SEI of the range's last GOP); absent where the recording ended."""

    @property
    def partial(self) -> bool:
        return bool(self.damaged)


def _verify_tails(
    bundle: Path,
    manifest: dict[str, Any],
    key: ed25519.Ed25519PublicKey,
    device: str,
    last: Mapping[str, fmt.SealedSegment],
    envelopes: Mapping[tuple[str, bytes], fmt.EpochEnvelope],
    listed: set[str],
) -> dict[str, fmt.SealedSegment]:
    """The manifest's ``tail`` segments (absent from bundles made before it): each signed,
    the very next segment of its camera's last one in the bundle, chained to it."""
    raw_list = manifest.get("tail", [])
    if not isinstance(raw_list, list):
        raise IntegrityError("manifest: tail has the wrong type")
    tails: dict[str, fmt.SealedSegment] = {}
    for i, entry in enumerate(raw_list):
        where = f"tail[{i}]."
        seg = fmt.verify_segment(_read_listed(bundle, entry, where), key, device_id=device)
        h = seg.header
        before = last.get(h.camera_id)
        if (
            h.camera_id != _field(entry, "camera", str, where)
            or h.sequence != _field(entry, "sequence", int, where)
            or before is None
            or h.camera_id in tails
        ):
            raise IntegrityError(f"{entry['file']}: header does not match the manifest")
        if h.sequence != before.header.sequence + 1 or h.prev_hash != before.chain_hash:
            raise IntegrityError(
                f"{entry['file']}: does not continue {h.camera_id}#{before.header.sequence}"
            )
        if (h.camera_id, h.epoch_id) not in envelopes:
            raise IntegrityError(f"{entry['file']}: its epoch envelope is missing")
        tails[h.camera_id] = seg
        listed.add(entry["file"])
    return tails


def _field(obj: Any, name: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise IntegrityError(f"manifest: {where}{name} missing")
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise IntegrityError(f"manifest: {where}{name} has the wrong type")
    return value


def read_listed(bundle: Path, entry: Any, where: str) -> bytes:
    """A file the manifest lists (``entry``: file, sha256), inside the bundle, digest checked."""
    return _read_listed(bundle, entry, where)


def _read_listed(bundle: Path, entry: Any, where: str) -> bytes:
    name = str(_field(entry, "file", str, where))
    path = (bundle / name).resolve()
    if bundle.resolve() not in path.parents:
        raise IntegrityError(f"manifest: {where}file {name!r} points outside the bundle")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"{name}: listed in the manifest but missing (deleted)") from None
    except OSError as exc:
        raise IntegrityError(f"{name}: unreadable: {exc.strerror}") from None
    if hashlib.sha256(data).hexdigest() != _field(entry, "sha256", str, where):
        raise IntegrityError(f"{name}: digest differs from the manifest (altered or swapped)")
    return data


def parse_manifest(body: bytes, format_name: str = BUNDLE_FORMAT) -> dict[str, Any]:
    try:
        manifest = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError("manifest.json: not JSON") from None
    if not isinstance(manifest, dict):
        raise IntegrityError("manifest.json: not an object")
    if manifest.get("format") != format_name or manifest.get("version") != 1:
        raise IntegrityError(f"manifest.json: not an {format_name} version 1")
    for name, kind in (
        ("case", str),
        ("device", str),
        ("unit_public_key", str),
        ("segments", list),
        ("envelopes", list),
        ("cameras", dict),
    ):
        _field(manifest, name, kind, "")
    return manifest


def _damaged_parts(manifest: dict[str, Any]) -> tuple[DamagedPart, ...]:
    """The manifest's ``damaged`` list (absent in bundles of complete exports made before it)."""
    raw = manifest.get("damaged", [])
    if not isinstance(raw, list):
        raise IntegrityError("manifest: damaged has the wrong type")
    parts = []
    for i, entry in enumerate(raw):
        where = f"damaged[{i}]."
        try:
            kind = DamageKind(_field(entry, "kind", str, where))
        except ValueError:
            raise IntegrityError(f"manifest: {where}kind unknown") from None
        part = DamagedPart(
            _field(entry, "camera", str, where),
            _field(entry, "first_sequence", int, where),
            _field(entry, "last_sequence", int, where),
            kind,
            _field(entry, "detail", str, where),
        )
        if part.last_sequence < part.first_sequence:
            raise IntegrityError(f"manifest: {where}sequences reversed")
        parts.append(part)
    if manifest.get("partial", False) is not bool(parts):
        raise IntegrityError("manifest: partial does not agree with the damaged list")
    return tuple(parts)


def _declared(
    parts: Sequence[DamagedPart], camera: str, first: int, last: int, chain: bool
) -> bool:
    """Whether every sequence first..last of ``camera`` is declared damaged (of the right kind:
    left out, or ``chain`` for an included segment that does not continue its predecessor)."""
    runs = sorted(
        (p.first_sequence, p.last_sequence)
        for p in parts
        if p.camera == camera and (p.kind is DamageKind.CHAIN) == chain
    )
    want = first
    for lo, hi in runs:
        if lo > want:
            break
        want = max(want, hi + 1)
    return want > last


def verify_bundle(
    bundle: Path,
    *,
    unit_public_key: ed25519.Ed25519PublicKey | None = None,
    fleet_ca: Sequence[x509.Certificate] | None = None,
    crls: Sequence[x509.CertificateRevocationList] = (),
    trust_bundle_key: bool = False,
    receipt_key: ed25519.Ed25519PublicKey | None = None,
) -> VerifiedBundle:
    """Check a bundle completely; :class:`IntegrityError` names the first problem found.

    With ``receipt_key`` (the CSU's), every receipt the bundle carries must be the CSU's, for
    this unit, and of the very segment the bundle holds under its sequence.

    The trust anchor is ``fleet_ca`` (the city's CA certificates; its self-signed ones are the
    roots, optionally with the CRLs ``crls``), or ``unit_public_key`` (pinned), or, only when
    ``trust_bundle_key`` says so, the key inside the bundle. With none, nothing is trusted.
    """
    if fleet_ca is None and unit_public_key is None and not trust_bundle_key:
        raise IntegrityError(
            "no trust anchor: give the fleet CA (--ca) or the unit's public key (--unit-key); "
            "the key inside a bundle proves nothing by itself"
        )
    try:
        body = (bundle / "manifest.json").read_bytes()
        sig = (bundle / "manifest.sig").read_bytes()
    except FileNotFoundError as exc:
        raise IntegrityError(f"{bundle}: {Path(str(exc.filename)).name} missing") from None
    except OSError as exc:
        raise IntegrityError(f"{bundle}: {exc.strerror}") from None
    manifest = parse_manifest(body)
    try:
        key = load_public_pem(manifest["unit_public_key"].encode(), origin="manifest")
    except VaultError as exc:
        raise IntegrityError(str(exc)) from None
    if unit_public_key is not None and public_raw(key) != public_raw(unit_public_key):
        raise IntegrityError("the bundle is signed by another unit key than the one expected")
    try:
        key.verify(sig, _DOMAIN + hashlib.sha256(body).digest())
    except InvalidSignature:
        raise IntegrityError("manifest.sig: bad signature (manifest altered)") from None
    if fleet_ca is not None:
        trust = ""  # said by verify_contents, once the certificate checks
    else:
        trust = "pinned unit key" if unit_public_key else "key inside the bundle (not verified)"
    return verify_contents(
        bundle, manifest, key, trust=trust, fleet_ca=fleet_ca, crls=crls, receipt_key=receipt_key
    )


def verify_contents(
    bundle: Path,
    manifest: dict[str, Any],
    key: ed25519.Ed25519PublicKey,
    *,
    trust: str,
    fleet_ca: Sequence[x509.Certificate] | None = None,
    crls: Sequence[x509.CertificateRevocationList] = (),
    receipt_key: ed25519.Ed25519PublicKey | None = None,
    listed_elsewhere: Sequence[str] = (),
) -> VerifiedBundle:
    """Everything of a bundle under a manifest whose seal the caller checked (the unit's
    signature here, the CSU's for :mod:`edge.csu.bundlefile`): every listed file's digest,
    every envelope, gap record, segment (signature with ``key``, chain, declared holes), event,
    certificate (at the recording times, with ``fleet_ca``) and receipt; no file unlisted
    except ``listed_elsewhere`` (what the caller checked itself)."""
    try:
        pem_file = (bundle / SIGNING_PUB_NAME).read_bytes()
    except OSError:
        raise IntegrityError(f"{SIGNING_PUB_NAME} missing") from None
    if pem_file != manifest["unit_public_key"].encode():
        raise IntegrityError(f"{SIGNING_PUB_NAME} differs from the key in the signed manifest")
    device = manifest["device"]
    damaged = _damaged_parts(manifest)
    listed = {"manifest.json", "manifest.sig", SIGNING_PUB_NAME, *listed_elsewhere}
    envelopes: dict[tuple[str, bytes], fmt.EpochEnvelope] = {}
    for i, entry in enumerate(manifest["envelopes"]):
        where = f"envelopes[{i}]."
        env = fmt.verify_envelope(_read_listed(bundle, entry, where), key)
        if env.epoch_id.hex() != _field(entry, "epoch", str, where) or env.device_id != device:
            raise IntegrityError(f"{entry['file']}: envelope does not match the manifest")
        envelopes[(env.camera_id, env.epoch_id)] = env
        listed.add(entry["file"])
    gaps = _verify_listed_gaps(bundle, manifest, key, device, listed)
    mask_list = manifest.get("mask_sets", [])  # absent from bundles made before commitments
    if not isinstance(mask_list, list):
        raise IntegrityError("manifest: mask_sets has the wrong type")
    mask_sets = maskhistory.verify_listed(
        mask_list, lambda e, w: _read_listed(bundle, e, w), key, device
    )
    listed.update(str(e["file"]) for e in mask_list)
    segments: list[fmt.SealedSegment] = []
    last: dict[str, fmt.SealedSegment] = {}
    for i, entry in enumerate(manifest["segments"]):
        where = f"segments[{i}]."
        raw = _read_listed(bundle, entry, where)
        seg = fmt.verify_segment(raw, key, device_id=device)
        h = seg.header
        if h.camera_id != _field(entry, "camera", str, where) or h.sequence != _field(
            entry, "sequence", int, where
        ):
            raise IntegrityError(f"{entry['file']}: header does not match the manifest")
        before = last.get(h.camera_id)
        if _declared(damaged, h.camera_id, h.sequence, h.sequence, chain=False):
            raise IntegrityError(
                f"{h.camera_id}#{h.sequence}: in the bundle but declared left out in the manifest"
            )
        if before is None:
            cam = manifest["cameras"].get(h.camera_id)
            if not isinstance(cam, dict) or cam.get("prev_hash") != h.prev_hash.hex():
                raise IntegrityError(f"{h.camera_id}: first segment does not match the manifest")
        else:
            b = before.header.sequence
            if h.sequence == b:
                raise IntegrityError(f"{h.camera_id}#{h.sequence}: duplicated")
            if h.sequence < b:
                raise IntegrityError(f"{h.camera_id}#{h.sequence}: out of order (after #{b})")
            # Through the signed records of sequences the unit lost; then a hole or a break is
            # accepted only where the signed manifest declares it (after a hole the chain
            # restarts: the segment before it is not here to check against).
            walk = chain.through_gaps(gaps.get(h.camera_id, {}), b + 1, before.chain_hash)
            nxt, want = walk.sequence, walk.prev_hash
            if h.sequence != nxt and not _declared(
                damaged, h.camera_id, nxt, h.sequence - 1, chain=False
            ):
                raise IntegrityError(f"{h.camera_id}: sequences {nxt}..{h.sequence - 1} missing")
            if (
                h.sequence == nxt
                and h.prev_hash != want
                and not _declared(damaged, h.camera_id, h.sequence, h.sequence, chain=True)
            ):
                raise IntegrityError(f"{h.camera_id}#{h.sequence}: chain broken")
        if (h.camera_id, h.epoch_id) not in envelopes:
            raise IntegrityError(f"{h.camera_id}#{h.sequence}: its epoch envelope is missing")
        last[h.camera_id] = seg
        segments.append(seg)
        listed.add(entry["file"])
    tails = _verify_tails(bundle, manifest, key, device, last, envelopes, listed)
    events = verify_events(bundle, manifest, key, device, listed, _read_listed)
    for cert in manifest.get("certificates", []):
        _read_listed(bundle, cert, "certificates[].")
        listed.add(cert["file"])
    raw_receipts = _read_receipts(bundle, manifest, listed)
    for path in bundle.rglob("*"):
        rel = path.relative_to(bundle).as_posix()
        if path.is_file() and rel not in listed:
            raise IntegrityError(f"{rel}: not listed in the manifest (added or duplicated)")
    if not segments:
        raise IntegrityError("the bundle holds no segment")
    all_gaps = tuple(g for cam in sorted(gaps) for _, g in sorted(gaps[cam].items()))
    if receipt_key is not None:
        found = rcpt.check_bundle_receipts(raw_receipts, segments, receipt_key, device)
    else:
        found = [rcpt.parse_receipt(raw) for raw in raw_receipts]
    checked = receipt_key is not None
    if fleet_ca is not None:
        # Every record was signed while it was made: the certificate must cover them all.
        times = [t for s in segments for t in (s.header.start_wall_ns, s.header.end_wall_ns)]
        times += [e.created_wall_ns for e in envelopes.values()]
        span = (min(times), max(times))
        cert = _check_certificate(bundle, manifest, key, span, fleet_ca, crls)
        trust = f"fleet CA (evidence certificate {cert.serial_number:x})"
        return VerifiedBundle(
            bundle,
            manifest,
            segments,
            envelopes,
            key,
            trust,
            cert,
            damaged,
            all_gaps,
            mask_sets,
            tuple(found),
            checked,
            events,
            tails=tails,
        )
    return VerifiedBundle(
        bundle,
        manifest,
        segments,
        envelopes,
        key,
        trust,
        None,
        damaged,
        all_gaps,
        mask_sets,
        tuple(found),
        checked,
        events,
        tails=tails,
    )


def sealing_key(
    bundle: Path,
    *,
    fleet_ca: Sequence[x509.Certificate] | None,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> ed25519.Ed25519PublicKey | None:
    """The unit key of a bundle :func:`verify_bundle` refused, when its seal (manifest
    signature) still holds and, with ``fleet_ca``, its evidence certificate checks over the
    times the manifest gives: what a per-segment report may trust. None otherwise."""
    try:
        body = (bundle / "manifest.json").read_bytes()
        sig = (bundle / "manifest.sig").read_bytes()
        manifest = parse_manifest(body)
        key = load_public_pem(manifest["unit_public_key"].encode(), origin="manifest")
        key.verify(sig, _DOMAIN + hashlib.sha256(body).digest())
        if fleet_ca is not None:
            times = [int(e[name]) for e in manifest["segments"] for name in ("start_ns", "end_ns")]
            _check_certificate(bundle, manifest, key, (min(times), max(times)), fleet_ca, crls)
    except (OSError, InvalidSignature, IntegrityError, VaultError, KeyError, TypeError, ValueError):
        return None
    return key


def _read_receipts(bundle: Path, manifest: dict[str, Any], listed: set[str]) -> list[bytes]:
    entries = manifest.get("receipts", [])  # absent from bundles made before receipts
    if not isinstance(entries, list):
        raise IntegrityError("manifest: receipts has the wrong type")
    out: list[bytes] = []
    for i, entry in enumerate(entries):
        where = f"receipts[{i}]."
        records = rcpt.split_records(_read_listed(bundle, entry, where))
        if len(records) != _field(entry, "count", int, where):
            raise IntegrityError(f"{entry['file']}: holds another number of receipts")
        out += records
        listed.add(entry["file"])
    return out


def _verify_listed_gaps(
    bundle: Path,
    manifest: dict[str, Any],
    key: ed25519.Ed25519PublicKey,
    device: str,
    listed: set[str],
) -> dict[str, dict[int, fmt.GapRecord]]:
    """The bundle's signed gap records (``gaps`` in the manifest), by camera and first lost
    sequence; each must match its manifest entry."""
    out: dict[str, dict[int, fmt.GapRecord]] = {}
    entries = manifest.get("gaps", [])
    if not isinstance(entries, list):
        raise IntegrityError("manifest: gaps has the wrong type")
    for i, entry in enumerate(entries):
        where = f"gaps[{i}]."
        gap = fmt.verify_gap(_read_listed(bundle, entry, where), key)
        if (
            gap.device_id != device
            or gap.camera_id != _field(entry, "camera", str, where)
            or gap.first != _field(entry, "first_sequence", int, where)
            or gap.last != _field(entry, "last_sequence", int, where)
        ):
            raise IntegrityError(f"{entry['file']}: gap record does not match the manifest")
        out.setdefault(gap.camera_id, {})[gap.first] = gap
        listed.add(entry["file"])
    return out


def certified_key(
    bundle: Path,
    manifest: dict[str, Any],
    key: ed25519.Ed25519PublicKey,
    fleet_ca: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> ed25519.Ed25519PublicKey | None:
    """``key`` when the bundle's evidence certificate certifies it over the times the manifest
    gives (for a per-segment report of a refused bundle whose seal held); None otherwise."""
    try:
        times = [int(e[name]) for e in manifest["segments"] for name in ("start_ns", "end_ns")]
        _check_certificate(bundle, manifest, key, (min(times), max(times)), fleet_ca, crls)
    except (IntegrityError, KeyError, TypeError, ValueError):
        return None
    return key


def _check_certificate(
    bundle: Path,
    manifest: dict[str, Any],
    key: ed25519.Ed25519PublicKey,
    span_ns: tuple[int, int],
    fleet_ca: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
) -> x509.Certificate:
    """The bundle's evidence certificate, checked against ``fleet_ca`` over the recording."""
    name = manifest.get("signing_certificate")
    if not isinstance(name, str):
        raise IntegrityError(
            "the bundle carries no evidence-signing certificate (the unit was not enrolled when "
            "it exported): it can only be verified with a pinned unit key (--unit-key)"
        )
    where = "certificates[]."
    entries = {str(_field(c, "file", str, where)): c for c in manifest.get("certificates", [])}
    if name not in entries:
        raise IntegrityError(f"manifest: signing_certificate {name!r} is not listed")
    files = [
        _read_listed(bundle, entries[n], where)
        for n in (name, f"certs/{CA_CHAIN_NAME}")
        if n in entries
    ]
    try:
        chain = evidence.bundle_chain(files, name)
    except ValueError as exc:
        raise IntegrityError(str(exc)) from None
    first, last = (evidence.ns_time(ns) for ns in span_ns)
    problem = evidence.chain_problem(
        chain,
        fleet_ca,
        unit_id=manifest["device"],
        signing_key=key,
        first=first,
        last=last,
        crls=crls,
    )
    if problem is not None:
        raise IntegrityError(f"{name}: {problem}")
    return chain[0]


def open_bundle(
    bundle: Path,
    private: RecipientPrivate,
    out_path: Path,
    *,
    camera: str | None = None,
    unit_public_key: ed25519.Ed25519PublicKey | None = None,
    fleet_ca: Sequence[x509.Certificate] | None = None,
    crls: Sequence[x509.CertificateRevocationList] = (),
    trust_bundle_key: bool = False,
    gaps: list[TimeGap] | None = None,
    receipt_key: ed25519.Ed25519PublicKey | None = None,
) -> tuple[VerifiedBundle, int]:
    """Verify (trust anchors as in :func:`verify_bundle`), decrypt and remux one camera of a
    bundle into ``out_path``; returns the number of packets. The time gaps of the clip (kept
    at their true length) are appended to ``gaps``."""
    verified = verify_bundle(
        bundle,
        unit_public_key=unit_public_key,
        fleet_ca=fleet_ca,
        crls=crls,
        trust_bundle_key=trust_bundle_key,
        receipt_key=receipt_key,
    )
    return verified, open_verified(verified, private, out_path, camera=camera, gaps=gaps)


def open_verified(
    verified: VerifiedBundle,
    private: RecipientPrivate,
    out_path: Path,
    *,
    camera: str | None = None,
    gaps: list[TimeGap] | None = None,
) -> int:
    """Decrypt and remux one camera of a bundle already verified (the unit's or the CSU's
    kind) into ``out_path``; returns the number of packets."""
    cams = sorted({s.header.camera_id for s in verified.segments})
    chosen = camera or cams[0]
    if chosen not in cams:
        raise VaultError(f"camera {chosen!r} not in the bundle (it holds {', '.join(cams)})")
    keys: dict[bytes, bytes] = {}

    def plain() -> Any:
        for seg in verified.segments:
            if seg.header.camera_id != chosen:
                continue
            epoch = seg.header.epoch_id
            if epoch not in keys:
                keys[epoch] = open_envelope(verified.envelopes[(chosen, epoch)], private)
            yield (*decrypt_segment(seg, keys[epoch]), seg.header.start_wall_ns)

    declared = sum(s.header.frame_count for s in verified.segments if s.header.camera_id == chosen)
    closing: list[bytes] = []
    tail = verified.tails.get(chosen)
    if tail is not None:
        # The signature of the clip's last GOP: in the next segment's first access unit.
        if tail.header.epoch_id not in keys:
            keys[tail.header.epoch_id] = open_envelope(
                verified.envelopes[(chosen, tail.header.epoch_id)], private
            )
        closing = closing_seis(*decrypt_segment(tail, keys[tail.header.epoch_id]))
    tmp = out_path.with_name(f".{out_path.name}.partial.mp4")
    try:
        count = remux(plain(), tmp, gaps, closing)
        if count != declared:
            raise IntegrityError(
                f"the video holds {count} frame(s) but the signed headers declare {declared}"
            )
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return count

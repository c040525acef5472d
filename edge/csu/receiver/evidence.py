"""The CSU evidence bundle, receiver side: gather a camera's range, seal it, audit it, send it.

Route (operator listener, beside the MP4 export, same authentication: the investigator's role
or EXPORT permission and the scope are checked by :func:`edge.csu.receiver.hls.operators_app`
before this handler runs, and refusals are audited there)::

    GET /v1/export/{unit}/{camera}.tar?from=UNIX_S&to=UNIX_S&case=REF

The bundle (:mod:`edge.csu.bundlefile`) holds the unit's exact sealed bytes, so the CSU can
drop but never alter or add video: what it cannot carry intact is declared, with its reason,
in the signed manifest. Beside the video it carries what else the CSU holds of the range, each
item still signed by the unit: the records (polygons) of the mask sets the segments commit to,
the unit's events of the camera and its cabinet alarms, and the sealed snapshots of those events
the unit sent; and the receipts the receivers signed of the segments and kept
(:meth:`.archive.SegmentStore.keep_receipt`), in a unit export's layout. What a unit's own export
would carry and the CSU does not hold (receipts of segments received before the receivers kept
them; a mask set the unit never sent; per event, a snapshot it never
sent) is declared in the manifest's ``not_held`` (per event ``snapshot_not_held``). It is built
in an anonymous temporary file in the storage directory (nothing is left behind by a crash,
and memory stays flat for an hour of video), audited (``export``, ``kind: bundle``, with the
case and the SHA-256 of the file) and only then sent.
A range is bounded like the MP4 export: at most :data:`MAX_BUNDLE_SEGMENTS` segments and
:data:`MAX_BUNDLE_BYTES`; a longer range is refused, never cut short in silence.

Threads: :func:`build` runs in the receiver's worker pool (reads and hashes files); it copies
the camera's index under the camera lock and reads files after, so uploads are not held up. A
file retention deletes meanwhile is declared missing, with that reason. The events are found
by reading every event the CSU stores for the unit (their names carry no time).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.identity.unitkeys import (
    SIGNING_CERT_NAME,
    SIGNING_PUB_NAME,
    key_id,
    public_pem,
    public_raw,
)
from edge.vault import chain, maskhistory, snapshots
from edge.vault import format as sealed
from edge.vault.bundle import DamagedPart, DamageKind
from edge.vault.receipt import frame_record, parse_receipt

from ...errors import IntegrityError
from .. import bundlefile
from ..console.pages import CASE_PATTERN
from . import receipts
from .archive import Refusal, checked_mask_set
from .base import SegmentReader
from .purge import ledger_path

if TYPE_CHECKING:
    from .server import Receiver

#: The operator the operators' listener authorised a request for (set by the bearer-token and
#: session check of :mod:`.hls`, read by the routes that audit in their name).
OPERATOR: web.RequestKey[str] = web.RequestKey("operator", str)

MAX_BUNDLE_SEGMENTS = 1800  # one hour of 2 s segments, as the MP4 export
MAX_BUNDLE_BYTES = 4 * 1024**3
CONCURRENT_BUILDS = 2  # each reads up to MAX_BUNDLE_BYTES: more would starve the uploads
_ID = r"[a-z0-9][a-z0-9-]{0,62}"

NOT_RECEIVED = "not received from the unit (still in its backlog, or lost without a record)"
LOST_AT_UNIT = "lost at the unit (its signed gap record is in the bundle)"
DELETED = "deleted by the CSU's retention (its signed deletion record is in the bundle)"
#: What a unit's own export carries and a CSU bundle cannot, each with why (manifest
#: ``not_held``; ``edge-csu verify`` prints them).
RECEIPTS_NOT_HELD = (
    "the CSU holds no receipt of {missing} of the {of} segment(s): received before this CSU "
    "kept the receipts it signs, or while it had no receipt key (the unit's own export carries "
    "the receipts it was given)"
)
MASK_SET_NOT_HELD = "the unit has not sent the CSU its signed record of this mask set"
SNAPSHOT_NOT_HELD = (
    "the unit has not sent the CSU this snapshot (yet, or it never will: the unit's own export "
    "carries it)"
)


@dataclass(frozen=True, slots=True)
class BundleRequest:
    unit: str
    camera: str
    start_ns: int
    end_ns: int
    case: str
    operator: str


@dataclass(frozen=True, slots=True)
class UnitTrust:
    """The unit key the CSU trusts now, and the certificate that vouches for it (if any)."""

    key: ed25519.Ed25519PublicKey
    source: str
    certificate: bytes | None


@dataclass(frozen=True, slots=True)
class BuiltBundle:
    size: int
    sha256: str
    """SHA-256 of the whole tar file, as downloaded."""
    manifest_sha256: str
    segments: int
    first: int
    last: int
    damaged: tuple[DamagedPart, ...]
    gaps: int
    deletions: int
    mask_sets: int
    events: int

    def audit_fields(self) -> dict[str, Any]:
        return {
            "kind": "bundle",
            "bundle_sha256": self.sha256,
            "manifest_sha256": self.manifest_sha256,
            "bytes": self.size,
            "segments": self.segments,
            "first": self.first,
            "last": self.last,
            "partial": bool(self.damaged),
            "damaged": [[p.first_sequence, p.last_sequence, p.kind.value] for p in self.damaged],
            "gaps": self.gaps,
            "deletions": self.deletions,
            "mask_sets": self.mask_sets,
            "events": self.events,
        }


class _Damage:
    """Declared parts in order, contiguous runs of the same kind and reason merged."""

    def __init__(self, camera: str) -> None:
        self.camera = camera
        self.parts: list[DamagedPart] = []

    def add(self, first: int, last: int, kind: DamageKind, detail: str) -> None:
        if self.parts:
            p = self.parts[-1]
            if (p.kind, p.detail) == (kind, detail) and p.last_sequence + 1 == first:
                self.parts[-1] = DamagedPart(self.camera, p.first_sequence, last, kind, detail)
                return
        self.parts.append(DamagedPart(self.camera, first, last, kind, detail))

    def hole(self, first: int, last: int, spans: list[tuple[int, int, str]]) -> None:
        """Sequences ``first..last`` not held, each run named by the record that explains it."""
        at = first
        for lo, hi, why in sorted(spans):
            if hi < at or lo > last:
                continue
            if lo > at:
                self.add(at, lo - 1, DamageKind.MISSING, NOT_RECEIVED)
            self.add(max(lo, at), min(hi, last), DamageKind.MISSING, why)
            at = min(hi, last) + 1
            if at > last:
                return
        if at <= last:
            self.add(at, last, DamageKind.MISSING, NOT_RECEIVED)


def _deletion_lines(
    ledger: Path, unit: str, camera: str, start_ns: int, end_ns: int, holes: list[DamagedPart]
) -> list[bytes]:
    """The ledger's lines of this camera that touch the range: by the age of what they deleted,
    or by a declared hole they explain. Their signatures travel with them.

    The ledger grows by a line per camera and purge cycle: it is read line by line, and only
    lines naming the unit are parsed."""
    out: list[bytes] = []
    marker = json.dumps(unit).encode()
    try:
        with ledger.open("rb") as fh:
            for raw in fh:
                line = raw.rstrip(b"\n")
                if marker in line and _touches(line, unit, camera, start_ns, end_ns, holes):
                    out.append(line)
    except FileNotFoundError:
        return []
    return out


def _touches(
    line: bytes, unit: str, camera: str, start_ns: int, end_ns: int, holes: list[DamagedPart]
) -> bool:
    try:
        record = json.loads(line)["record"]
        if (record["unit"], record["camera"], record["kind"]) != (unit, camera, "segments"):
            return False
        spans = [(int(a), int(b)) for a, b in record["sequences"]]
        by_time = int(record["oldest_ns"]) < end_ns and int(record["newest_ns"]) >= start_ns
    except (ValueError, KeyError, TypeError):
        return False  # a damaged line is `edge-csu retention audit`'s to report
    by_hole = any(a <= p.last_sequence and p.first_sequence <= b for a, b in spans for p in holes)
    return by_time or by_hole


def build(
    store: SegmentReader,
    req: BundleRequest,
    trust: UnitTrust,
    csu_key: ed25519.Ed25519PrivateKey,
    out: IO[bytes],
    *,
    ledger: Path | None = None,
    deletion_public_pem: bytes | None = None,
    clock: Callable[[], int] = time.time_ns,
) -> BuiltBundle:
    """Write the bundle of ``req`` into ``out`` (a tar); :class:`Refusal` when there is nothing
    to export or the range is over the bounds."""
    records = store.records(req.unit, req.camera, req.start_ns, req.end_ns)
    metas = records.segments
    gap_records = {g.first: g for g in records.gaps}
    purged = list(records.purged)
    if not metas:
        raise Refusal(404, "nothing recorded in that range")
    if len(metas) > MAX_BUNDLE_SEGMENTS or sum(m.size for m in metas) > MAX_BUNDLE_BYTES:
        raise Refusal(
            413,
            f"the range holds {len(metas)} segment(s), {sum(m.size for m in metas)} bytes: "
            f"at most {MAX_BUNDLE_SEGMENTS} segments and {MAX_BUNDLE_BYTES} bytes per bundle "
            "(export it in parts)",
        )
    explained = [(g.first, g.last, LOST_AT_UNIT) for g in gap_records.values()]
    explained += [(a, b, DELETED) for a, b in purged]
    now_ns = clock()
    tar = bundlefile.TarWriter(out, now_ns // 10**9)
    damage = _Damage(req.camera)
    gaps_used: dict[int, sealed.GapRecord] = {}
    envelopes: dict[bytes, dict[str, Any]] = {}
    refused_epochs: dict[bytes, str] = {}
    segments: list[dict[str, Any]] = []
    committed: set[bytes] = set()  # digests of the mask sets the segments commit to
    chain_hashes: dict[int, bytes] = {}  # of the segments carried, for their receipts
    first_prev: str | None = None
    expect: tuple[int, bytes | None] | None = None  # next sequence, and its prev hash if known
    for meta in metas:
        seq = meta.sequence
        want: bytes | None = None
        if expect is not None:
            nxt, want = expect
            if want is not None:
                walk = chain.through_gaps(gap_records, nxt, want)
                gaps_used.update({g.first: g for g in walk.crossed})
                nxt, want = walk.sequence, walk.prev_hash
            if nxt < seq:
                damage.hole(nxt, seq - 1, explained)
                want = None  # after a hole the chain restarts (the verifier's rule too)
        expect = (seq + 1, None)
        try:
            raw = store.read_segment(req.unit, req.camera, seq)
        except FileNotFoundError:
            damage.add(seq, seq, DamageKind.MISSING, "deleted while the bundle was built")
            continue
        except IntegrityError as exc:  # cluster mode: not the bytes its key names
            damage.add(seq, seq, DamageKind.ALTERED, f"fails its check at the CSU: {exc}")
            continue
        try:
            seg = sealed.verify_segment(raw, trust.key, device_id=req.unit)
            if (seg.header.camera_id, seg.header.sequence) != (req.camera, seq):
                raise IntegrityError("header does not match its place")
        except IntegrityError as exc:
            damage.add(seq, seq, DamageKind.ALTERED, f"fails its check at the CSU: {exc}")
            continue
        h = seg.header
        if h.epoch_id not in envelopes and h.epoch_id not in refused_epochs:
            env_raw = store.read_envelope(req.unit, req.camera, h.epoch_id.hex())
            try:
                if env_raw is None:
                    raise IntegrityError("its epoch envelope was never received")
                env = sealed.verify_envelope(env_raw, trust.key)
                if (env.device_id, env.camera_id) != (req.unit, req.camera):
                    raise IntegrityError("its epoch envelope is of another camera")
            except IntegrityError as exc:
                refused_epochs[h.epoch_id] = str(exc)
            else:
                name = f"epochs/{req.camera}/{h.epoch_id.hex()}.env"
                envelopes[h.epoch_id] = {
                    "camera": req.camera, "epoch": h.epoch_id.hex(), **tar.add(name, env_raw)
                }  # fmt: skip
        if h.epoch_id in refused_epochs:
            damage.add(seq, seq, DamageKind.NO_ENVELOPE, refused_epochs[h.epoch_id])
            continue
        if want is not None and h.prev_hash != want:
            damage.add(seq, seq, DamageKind.CHAIN, "does not continue the segment before it")
        expect = (seq + 1, seg.chain_hash)
        if first_prev is None:
            first_prev = h.prev_hash.hex()
        committed.update(m.committed.mask_set for m in h.masks)
        chain_hashes[seq] = seg.chain_hash
        entry = tar.add(f"segments/{req.camera}/{seq:010d}.seg", raw)
        segments.append(
            {
                "camera": req.camera,
                "sequence": seq,
                "start_ns": h.start_wall_ns,
                "end_ns": h.end_wall_ns,
                "frames": h.frame_count,
                "epoch": h.epoch_id.hex(),
                "received_ns": meta.received_ns,
                **entry,
            }
        )
    if not segments:
        raise Refusal(
            409,
            "nothing intact to export in that range: "
            + "; ".join(str(p) for p in damage.parts[:3]),
        )
    tail = _tail(store, req, trust, tar, envelopes, expect)
    for gap in gap_records.values():  # losses the unit recorded within the range are named too
        if gap.after_wall_ns < req.end_ns and gap.created_wall_ns > req.start_ns:
            gaps_used.setdefault(gap.first, gap)
    gap_entries = []
    for first, gap in sorted(gaps_used.items()):
        try:
            sealed.verify_gap(gap.raw, trust.key)
        except IntegrityError:
            continue  # not the unit's: its sequences stay declared as a hole
        name = f"gaps/{req.camera}/{first:010d}-{gap.last:010d}.gap"
        gap_entries.append(
            {
                "camera": req.camera,
                "first_sequence": first,
                "last_sequence": gap.last,
                "after_ns": gap.after_wall_ns,
                "recorded_ns": gap.created_wall_ns,
                "reason": gap.reason,
                **tar.add(name, gap.raw),
            }
        )
    mask_entries, not_held = _mask_sets(store, req, trust.key, committed, tar)
    event_entries, events_damaged = _events(store, req, trust.key, tar)
    receipt_entries, lacking = _receipts(store, req, segments, chain_hashes, tar)
    if lacking:
        not_held.append({"what": "receipts", "reason": lacking})
    certs = []
    if trust.certificate is not None:
        certs.append(tar.add(f"certs/{SIGNING_CERT_NAME}", trust.certificate))
    deletions = None
    holes = [p for p in damage.parts if p.kind is DamageKind.MISSING]
    lines = (
        _deletion_lines(ledger, req.unit, req.camera, req.start_ns, req.end_ns, holes)
        if ledger is not None and deletion_public_pem is not None
        else []
    )
    if lines and deletion_public_pem is not None:
        entry = tar.add(bundlefile.DELETIONS, b"".join(line + b"\n" for line in lines))
        deletions = {"count": len(lines), "public_key": deletion_public_pem.decode(), **entry}
    unit_pem = public_pem(trust.key)
    tar.add(SIGNING_PUB_NAME, unit_pem)
    csu_pem = public_pem(csu_key.public_key())
    manifest = {
        "format": bundlefile.CSU_BUNDLE_FORMAT,
        "version": 1,
        "case": req.case,
        "operator": req.operator,
        "device": req.unit,
        "camera": req.camera,
        "range": {"from_ns": req.start_ns, "to_ns": req.end_ns},
        "created_ns": now_ns,
        "csu_public_key": csu_pem.decode(),
        "csu_key_id": key_id(public_raw(csu_key.public_key())),
        "unit_public_key": unit_pem.decode(),
        "unit_key_id": key_id(public_raw(trust.key)),
        "unit_key_source": trust.source,
        "cameras": {
            req.camera: {
                "first_sequence": segments[0]["sequence"],
                "last_sequence": segments[-1]["sequence"],
                "prev_hash": first_prev,
            }
        },
        "segments": segments,
        "tail": tail,
        "envelopes": sorted(envelopes.values(), key=lambda e: str(e["epoch"])),
        "gaps": gap_entries,
        "certificates": certs,
        "signing_certificate": f"certs/{SIGNING_CERT_NAME}" if certs else None,
        "partial": bool(damage.parts),
        "damaged": [p.as_dict() for p in damage.parts],
        "deletions": deletions,
        # The unit's signed records (polygons) of the mask sets the segments commit to.
        "mask_sets": mask_entries,
        # The unit's signed events of the range (and its unit alarms), as received.
        "events": event_entries,
        "events_damaged": events_damaged,
        # The receipts this CSU signed of the segments and kept, as a unit's export carries them.
        "receipts": receipt_entries,
        # What a unit's own export would carry and this CSU does not hold, with why.
        "not_held": not_held,
    }
    body = bundlefile.dumps(manifest)
    tar.add(bundlefile.MANIFEST, body)
    tar.add(bundlefile.SIGNATURE, bundlefile.seal(body, csu_key))
    tar.close()
    out.flush()
    size = out.seek(0, 2)
    out.seek(0)
    digest = hashlib.sha256()
    while chunk := out.read(1 << 20):
        digest.update(chunk)
    out.seek(0)
    return BuiltBundle(
        size,
        digest.hexdigest(),
        bundlefile.manifest_digest(body),
        len(segments),
        int(segments[0]["sequence"]),
        int(segments[-1]["sequence"]),
        tuple(damage.parts),
        len(gap_entries),
        len(lines),
        len(mask_entries),
        len(event_entries),
    )


def _receipts(
    store: SegmentReader,
    req: BundleRequest,
    segments: list[dict[str, Any]],
    chain_hashes: dict[int, bytes],
    tar: bundlefile.TarWriter,
) -> tuple[list[dict[str, Any]], str]:
    """The receipts the CSU kept of the bundle's segments, in one file as a unit's export
    carries them (``receipts/<camera>.rcl``); and, when some segment has none, why (for
    ``not_held``; empty when every segment's receipt is carried)."""
    sequences = [int(e["sequence"]) for e in segments]
    kept = store.read_receipts(req.unit, req.camera, sequences)
    raws: list[bytes] = []
    for seq in sequences:
        raw = kept.get(seq)
        if raw is None:
            continue
        try:
            r = parse_receipt(raw)
        except IntegrityError:
            continue  # not a receipt (the verifier would refuse it): declared below
        if (r.device_id, r.camera_id, r.sequence, r.chain_hash) == (
            req.unit, req.camera, seq, chain_hashes[seq]
        ):  # fmt: skip
            raws.append(raw)
    lacking = ""
    if len(raws) < len(sequences):
        lacking = RECEIPTS_NOT_HELD.format(missing=len(sequences) - len(raws), of=len(sequences))
    if not raws:
        return [], lacking
    name = f"receipts/{req.camera}.rcl"
    entry = tar.add(name, b"".join(frame_record(raw) for raw in raws))
    return [{"camera": req.camera, "count": len(raws), **entry}], lacking


def _mask_sets(
    store: SegmentReader,
    req: BundleRequest,
    key: ed25519.Ed25519PublicKey,
    committed: set[bytes],
    tar: bundlefile.TarWriter,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The unit's signed record of each committed mask set the CSU holds, into the bundle;
    each one it does not hold (or that no longer checks with the unit key) declared."""
    entries: list[dict[str, Any]] = []
    not_held: list[dict[str, Any]] = []
    for digest in sorted(committed):
        raw = store.read_mask_set(req.unit, req.camera, digest.hex())
        reason = MASK_SET_NOT_HELD
        if raw is not None:
            try:
                checked_mask_set(req.unit, req.camera, digest.hex(), raw, key)
            except Refusal as exc:
                reason = f"the record the CSU holds fails its check: {exc.reason}"
            else:
                name = maskhistory.mask_file(req.camera, digest)
                entries.append({"camera": req.camera, "digest": digest.hex(), **tar.add(name, raw)})
                continue
        not_held.append(
            {"what": "mask-set", "camera": req.camera, "digest": digest.hex(), "reason": reason}
        )
    return entries, not_held


def _events(
    store: SegmentReader,
    req: BundleRequest,
    key: ed25519.Ed25519PublicKey,
    tar: bundlefile.TarWriter,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The unit's signed events of the camera (and its unit alarms, camera ``unit``) within
    the range, exactly as received; one that no longer checks with the unit key is named in
    ``events_damaged`` rather than carried."""
    from edge.events import verify_wire  # local: edge.events pulls in numpy and PIL

    found: list[tuple[int, str, dict[str, Any], bytes]] = []
    damaged: list[dict[str, str]] = []
    for wire in (stored.body for stored in store.events(req.unit)):
        try:
            body = json.loads(wire)["event"]
            camera, event_id, wall_ns = str(body["camera"]), str(body["id"]), int(body["wall_ns"])
        except (ValueError, KeyError, TypeError):
            continue  # not an event the receiver would have stored
        if camera not in (req.camera, "unit") or not req.start_ns <= wall_ns < req.end_ns:
            continue
        try:
            verify_wire(wire, key)
        except IntegrityError as exc:
            damaged.append({"file": f"events/{event_id}.json", "detail": str(exc)})
            continue
        found.append((wall_ns, event_id, body, wire))
    entries: list[dict[str, Any]] = []
    for wall_ns, event_id, body, wire in sorted(found, key=lambda f: (f[0], f[1])):
        camera = str(body["camera"])
        name = f"events/{camera}/{wall_ns}-{event_id}.evt"
        entry: dict[str, Any] = {
            "camera": camera,
            "id": event_id,
            "time_ns": wall_ns,
            "category": body.get("category"),
            "kind": body.get("kind"),
            **tar.add(name, wire),
        }
        if isinstance(body.get("snapshot"), dict):
            held, why = _snapshot(store, req.unit, camera, event_id, key)
            if held is not None:
                snp = f"events/{camera}/{wall_ns}-{event_id}.snp"
                entry["snapshot"] = tar.add(snp, held)
            else:
                entry["snapshot_not_held"] = why
        entries.append(entry)
    return entries, damaged


def _tail(
    store: SegmentReader,
    req: BundleRequest,
    trust: UnitTrust,
    tar: bundlefile.TarWriter,
    envelopes: dict[bytes, dict[str, Any]],
    expect: tuple[int, bytes | None] | None,
) -> list[dict[str, Any]]:
    """The segment after the range's last exported one, when the CSU holds it intact and
    chained to it (``expect``: its sequence and previous hash): its first access unit carries
    the ONVIF Media Signing SEI of the range's last GOP (``edge-csu open`` moves it into the
    clip). None where the unit has not sent it yet or the recording ended there."""
    if expect is None or expect[1] is None:
        return []  # the range's last segment was left out: nothing to close
    seq, want = expect
    try:
        raw = store.read_segment(req.unit, req.camera, seq)
        seg = sealed.verify_segment(raw, trust.key, device_id=req.unit)
    except (FileNotFoundError, IntegrityError):
        return []
    h = seg.header
    if (h.camera_id, h.sequence) != (req.camera, seq) or h.prev_hash != want:
        return []
    if h.epoch_id not in envelopes:
        env_raw = store.read_envelope(req.unit, req.camera, h.epoch_id.hex())
        try:
            if env_raw is None:
                return []
            env = sealed.verify_envelope(env_raw, trust.key)
        except IntegrityError:
            return []
        if (env.device_id, env.camera_id) != (req.unit, req.camera):
            return []
        name = f"epochs/{req.camera}/{h.epoch_id.hex()}.env"
        envelopes[h.epoch_id] = {
            "camera": req.camera, "epoch": h.epoch_id.hex(), **tar.add(name, env_raw)
        }  # fmt: skip
    entry = tar.add(f"tail/{req.camera}/{seq:010d}.seg", raw)
    return [
        {
            "camera": req.camera,
            "sequence": seq,
            "start_ns": h.start_wall_ns,
            "end_ns": h.end_wall_ns,
            "frames": h.frame_count,
            "epoch": h.epoch_id.hex(),
            **entry,
        }
    ]


def _snapshot(
    store: SegmentReader, unit: str, camera: str, event_id: str, key: ed25519.Ed25519PublicKey
) -> tuple[bytes | None, str]:
    """(the sealed snapshot the CSU holds of an event, or None and why not). Checked as the
    verifier will (the unit's signature, sealed for this unit, camera and event); whether the
    picture inside is the event's was checked when it arrived, and ``edge-csu open`` checks
    it again."""
    raw = store.read_snapshot(unit, event_id)
    if raw is None:
        return None, SNAPSHOT_NOT_HELD
    try:
        snp = snapshots.verify_snapshot_file(raw, key)
    except IntegrityError as exc:
        return None, f"the snapshot the CSU holds fails its check: {exc}"
    if (snp.device_id, snp.camera_id, snp.event_id) != (unit, camera, event_id):
        return None, "the snapshot the CSU holds is sealed for another event"
    return raw, ""


def unit_trust(receiver: Receiver, unit: str) -> UnitTrust:
    """The key the registry trusts for ``unit`` now, with its certificate when that is what
    vouches for it; :class:`Refusal` when none."""
    trusted = receiver.registry.trust(unit)
    if trusted.key is None:
        raise Refusal(409, f"no trusted signing key for {unit}: {trusted.refusal}")
    certificate = None
    if trusted.source.value == "certificate":
        try:
            certificate = (receiver.cfg.registry_dir / f"{unit}.crt").read_bytes()
        except OSError:
            certificate = None  # replaced meanwhile: verifiable with a pinned key only
    return UnitTrust(trusted.key, trusted.source.value, certificate)


def download_name(req: BundleRequest) -> str:
    case = re.sub(r"[^A-Za-z0-9_.-]", "_", req.case)
    return f"{case}-{req.unit}-{req.camera}.tar"


def _time_arg(request: web.Request, name: str) -> int:
    try:
        return int(float(request.query[name]) * 1e9)
    except (KeyError, ValueError):
        raise web.HTTPBadRequest(text=f"query parameter {name}=UNIX_SECONDS required") from None


def add_routes(app: web.Application, receiver: Receiver) -> None:
    audit = receiver.audit
    builds = asyncio.Semaphore(CONCURRENT_BUILDS)

    async def export_bundle(request: web.Request) -> web.StreamResponse:
        unit, camera = request.match_info["unit"], request.match_info["camera"]
        start, end = _time_arg(request, "from"), _time_arg(request, "to")
        case = request.query.get("case", "")
        where = {"unit": unit, "camera": camera, "remote": _remote(request)}
        operator = request[OPERATOR]

        def refuse(status: int, reason: str) -> web.Response:
            audit.record(
                operator, "export-refused", kind="bundle", case=case, from_ns=start,
                to_ns=end, reason=reason, **where,
            )  # fmt: skip
            return web.Response(status=status, text=reason)

        if not re.fullmatch(CASE_PATTERN, case):
            return await receiver.run_blocking(
                refuse, 400, "case=REF required: 3-64 letters, digits, / _ . -"
            )
        if end <= start:
            return await receiver.run_blocking(refuse, 400, "the range ends before it starts")
        req = BundleRequest(unit, camera, start, end, case, operator)

        def work() -> tuple[IO[bytes], BuiltBundle]:
            # The audit key seals the manifest (see bundlefile); the receiver made it at start.
            csu_key = receipts.load_or_create(receiver.cfg.audit_key_file, "audit key")
            deletion_pub = receipts.public_path(receiver.cfg.retention.key_file)
            # Anonymous (O_TMPFILE): a crash leaves nothing; closed once sent.
            out = tempfile.TemporaryFile(dir=receiver.cfg.storage_dir, prefix=".bundle-")  # noqa: SIM115
            try:
                built = build(
                    receiver.store, req, unit_trust(receiver, unit), csu_key, out,
                    ledger=ledger_path(receiver.cfg.retention),
                    deletion_public_pem=deletion_pub.read_bytes()
                    if deletion_pub.exists() else None,
                )  # fmt: skip
                # Audited before a byte leaves: no bundle without its record.
                audit.record(
                    operator, "export", case=case, from_ns=start, to_ns=end,
                    **where, **built.audit_fields(),
                )  # fmt: skip
            except BaseException:
                out.close()
                raise
            return out, built

        async with builds:
            try:
                out, built = await receiver.run_blocking(work)
            except Refusal as exc:
                return await receiver.run_blocking(refuse, exc.status, exc.reason)
            except OSError as exc:  # a full or read-only storage disk: said, and audited
                reason = f"cannot build the bundle in {receiver.cfg.storage_dir}: {exc.strerror}"
                return await receiver.run_blocking(refuse, 507, reason)
        try:
            resp = web.StreamResponse(
                headers={
                    "Content-Type": "application/x-tar",
                    "Content-Length": str(built.size),
                    "Content-Disposition": f'attachment; filename="{download_name(req)}"',
                    "X-Bundle-SHA256": built.sha256,
                }
            )
            await resp.prepare(request)
            while chunk := await receiver.run_blocking(out.read, 1 << 20):
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        finally:
            out.close()

    app.router.add_get(f"/v1/export/{{unit:{_ID}}}/{{camera:{_ID}}}.tar", export_bundle)


def _remote(request: web.Request) -> str | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else None


__all__ = ["BuiltBundle", "BundleRequest", "UnitTrust", "add_routes", "build"]

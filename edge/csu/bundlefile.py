"""The CSU's evidence bundle: one tar file an investigator downloads from the console, sealed by
the CSU, whose video is proven by the units' own signatures.

Members (flat, plain files only; format in docs/FORMATS.md, *CSU evidence bundle*)::

    manifest.json        case, operator, unit, camera, range, CSU time, every file with its size
                         and SHA-256, what of the range is missing and why (``damaged``), the
                         CSU's public key, the unit key the CSU trusts
    manifest.sig         Ed25519 of the CSU audit key over b"edge-csu-bundle-v1\\0" ||
                         SHA-256(manifest.json)
    unit-signing.pub.pem the unit's verification key (also in the manifest)
    certs/unit-signing.crt  the unit's evidence certificate and intermediates, as the CSU holds it
    segments/<camera>/<sequence>.seg   the unit's sealed segments, the exact bytes it sent
    epochs/<camera>/<epoch>.env        the epoch envelopes they need
    gaps/<camera>/<first>-<last>.gap   the unit's signed records of sequences it lost
    masks/<camera>/<digest>.json       the unit's signed ``mask-set`` records (polygons) of
                                       the mask sets the segments commit to, as the CSU holds
    events/<camera>/<time>-<id>.evt    the unit's signed events of the range (its unit alarms
                                       under camera ``unit``), exactly as received
    events/<camera>/<time>-<id>.snp    the sealed snapshots of those events the unit sent
    receipts/<camera>.rcl  the receipts the CSU signed of the segments and kept, in the unit's
                         export layout (2-byte length, then each receipt)
    deletions.jsonl      the CSU's signed retention deletion records touching the range

What a unit's own export carries and the CSU does not hold is declared, with why, in the
manifest's ``not_held``: the receipts of segments the CSU kept none of (received before the
receivers kept them), the record of a committed mask set the unit never
sent, and (per event, ``snapshot_not_held``) a snapshot the unit has not sent. A snapshot
carried is checked as in a unit's export (the unit's signature, its event; ``edge-csu open``
opens it and checks the picture against the event). The receipts carried are checked as in a
unit's export: against the CSU's receipt key when the verifier is given it (``--receipt-key``).

The CSU seals (lists and signs) but vouches for nothing it could have made: each segment,
envelope and gap record still carries the unit's signature, checked against the city's CA at
the recording dates by the same code as a unit's bundle
(:func:`edge.vault.bundle.verify_contents`). A CSU that dropped a segment could not hide it:
the unit's chain breaks, and the verifier accepts a hole only where the signed manifest declares
it, with its reason. The manifest is signed with the CSU's audit key (``audit_key_file``): the
export's record in the audit log and the bundle are checked with the one public key the CSU
already hands to auditors, and the distinct domain prefix keeps either signature from passing
for the other.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.identity.unitkeys import key_id, load_public_pem, public_raw
from edge.vault.bundle import (
    VerifiedBundle,
    certified_key,
    parse_manifest,
    read_listed,
    verify_contents,
)

from ..errors import IntegrityError, VaultError
from .receiver.deletions import check_line

CSU_BUNDLE_FORMAT = "edge-csu-evidence-bundle"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
DELETIONS = "deletions.jsonl"
_DOMAIN = b"edge-csu-bundle-v1\0"
#: Largest manifest read into memory (an hour of 2 s segments lists 1800 entries: ~700 KB).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def seal(body: bytes, key: ed25519.Ed25519PrivateKey) -> bytes:
    """``manifest.sig`` of ``body``."""
    return key.sign(_DOMAIN + hashlib.sha256(body).digest())


class TarWriter:
    """Writes members into an uncompressed PAX tar (the video is encrypted: nothing to gain),
    each with the same time, and returns the manifest entry of each."""

    def __init__(self, out: IO[bytes], mtime_s: int) -> None:
        # Closed by close(): members are added one by one as the caller reads them.
        self._tar = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self._mtime = mtime_s
        self.bytes = 0

    def add(self, name: str, data: bytes) -> dict[str, Any]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), self._mtime, 0o644
        self._tar.addfile(info, io.BytesIO(data))
        self.bytes += len(data)
        return {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    def close(self) -> None:
        self._tar.close()


def is_bundle_file(path: Path) -> bool:
    """Whether ``path`` is a file holding a tar archive (a CSU bundle, as downloaded)."""
    return path.is_file() and tarfile.is_tarfile(path)


def unpack(archive: Path, dest: Path) -> None:
    """Extract a downloaded bundle into the empty directory ``dest``: plain files only, no name
    twice, nothing outside ``dest`` (the archive may come from anyone)."""
    try:
        with tarfile.open(archive, mode="r:") as tar:
            members = tar.getmembers()
            seen: set[str] = set()
            for m in members:
                if m.isdir():
                    continue
                if not m.isfile():
                    raise IntegrityError(f"{archive}: {m.name!r} is not a plain file")
                if m.name in seen:
                    raise IntegrityError(f"{archive}: {m.name!r} is in the archive twice")
                seen.add(m.name)
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as exc:
        raise IntegrityError(f"{archive}: not a readable bundle archive ({exc})") from None
    except OSError as exc:
        raise VaultError(f"{archive}: cannot unpack: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True)
class CsuVerified:
    """A CSU bundle whose seal and contents verified."""

    verified: VerifiedBundle
    csu_key_id: str
    csu_key_pinned: bool
    deletions: tuple[dict[str, Any], ...]
    """The CSU's signed retention deletion records of the camera that touch the range."""
    not_held: tuple[dict[str, Any], ...] = ()
    """What a unit's export would carry and the CSU declared it does not hold, with why."""

    def facts(self) -> list[str]:
        """Lines for people about what the CSU declared (the rest is the coverage report's)."""
        out = []
        for r in self.deletions:
            spans = ", ".join(f"#{a}..#{b}" for a, b in r.get("sequences", []))
            when = dt.datetime.fromtimestamp(int(r["deleted_ns"]) / 1e9, dt.UTC)
            out.append(
                f"retention: {r.get('count')} segment(s) {spans} deleted by the CSU on "
                f"{when.isoformat(timespec='seconds')} (limit {r.get('retention_days')} days; "
                "signed deletion record)"
            )
        events = self.verified.events
        if events:
            without = sum(1 for e in events if e.snapshot is None and "snapshot" in e.body)
            held = sum(1 for e in events if e.snapshot is not None)
            lacking = f"; {held} with their sealed snapshot" if held else ""
            if without:
                lacking += f"; {without} without their snapshot (not held at the CSU)"
            out.append(
                f"events: {len(events)} signed event(s) of the range, each checked with the unit "
                f"key{lacking}"
            )
        for bad in self.verified.manifest.get("events_damaged") or []:
            out.append(
                f"event left out: {bad.get('file')} (held at the CSU, but {bad.get('detail')})"
            )
        for item in self.not_held:
            if item["what"] == "mask-set":
                out.append(
                    f"not held at the CSU: the signed record (polygons) of mask set "
                    f"{str(item['digest'])[:16]}… of {item['camera']}: {item['reason']}"
                )
            else:
                out.append(f"not held at the CSU: {item['what']}: {item['reason']}")
        if not self.csu_key_pinned:
            out.append(
                "NOTE: the CSU seal was checked with the key inside the bundle; give the CSU's "
                "audit public key (--csu-key) to prove which CSU made it"
            )
        return out


def verify_csu_bundle(
    bundle: Path,
    *,
    fleet_ca: Sequence[x509.Certificate] | None = None,
    crls: Sequence[x509.CertificateRevocationList] = (),
    unit_public_key: ed25519.Ed25519PublicKey | None = None,
    csu_key: ed25519.Ed25519PublicKey | None = None,
    receipt_key: ed25519.Ed25519PublicKey | None = None,
) -> CsuVerified:
    """Check an unpacked CSU bundle completely; :class:`IntegrityError` names the first
    problem. The video's trust anchor is ``fleet_ca`` (or a pinned ``unit_public_key``);
    ``csu_key``, when given, must be the key that sealed the manifest; with ``receipt_key``
    (the CSU's receipt key) every receipt carried must check, as in a unit's export."""
    if fleet_ca is None and unit_public_key is None:
        raise IntegrityError(
            "no trust anchor: give the fleet CA (--ca) or the unit's public key (--unit-key)"
        )
    try:
        body = (bundle / MANIFEST).read_bytes()[: MAX_MANIFEST_BYTES + 1]
        sig = (bundle / SIGNATURE).read_bytes()
    except FileNotFoundError as exc:
        raise IntegrityError(f"{Path(str(exc.filename)).name} missing") from None
    except OSError as exc:
        raise IntegrityError(f"{bundle}: {exc.strerror}") from None
    if len(body) > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{MANIFEST}: larger than {MAX_MANIFEST_BYTES} bytes")
    manifest = parse_manifest(body, CSU_BUNDLE_FORMAT)
    try:
        sealer = load_public_pem(str(manifest["csu_public_key"]).encode(), origin="manifest")
        unit_key = load_public_pem(manifest["unit_public_key"].encode(), origin="manifest")
    except (KeyError, VaultError) as exc:
        raise IntegrityError(f"{MANIFEST}: {exc}") from None
    if csu_key is not None and public_raw(sealer) != public_raw(csu_key):
        raise IntegrityError(
            f"sealed by CSU key {key_id(public_raw(sealer))}, not by the key given "
            f"({key_id(public_raw(csu_key))}): not this CSU's bundle"
        )
    try:
        sealer.verify(sig, _DOMAIN + hashlib.sha256(body).digest())
    except InvalidSignature:
        raise IntegrityError(f"{SIGNATURE}: bad signature (manifest altered)") from None
    if unit_public_key is not None and public_raw(unit_key) != public_raw(unit_public_key):
        raise IntegrityError("the bundle's segments are of another unit key than the one given")
    camera = manifest.get("camera")
    if not isinstance(camera, str) or set(manifest["cameras"]) != {camera}:
        raise IntegrityError(f"{MANIFEST}: a CSU bundle holds the one camera it names")
    deletions, listed = _deletions(bundle, manifest)
    not_held = _not_held(manifest)
    verified = verify_contents(
        bundle,
        manifest,
        unit_key,
        trust="" if fleet_ca is not None else "pinned unit key",
        fleet_ca=fleet_ca,
        crls=crls,
        receipt_key=receipt_key,
        listed_elsewhere=listed,
    )
    _masks_accounted(verified, not_held)
    pinned = csu_key is not None
    csu_id = key_id(public_raw(sealer))
    when = dt.datetime.fromtimestamp(int(manifest.get("created_ns", 0)) / 1e9, dt.UTC)
    text = (
        f"seal: manifest signed by CSU key {csu_id} "
        f"({'the key given' if pinned else 'not pinned'}), exported by "
        f"{manifest.get('operator')!r} for case {manifest['case']!r} at "
        f"{when.isoformat(timespec='seconds')} (CSU time); every file listed and intact; the "
        f"segments are signed by unit key {manifest.get('unit_key_id', '?')} of unit "
        f"{manifest['device']!r}"
    )
    return CsuVerified(
        dataclasses.replace(verified, seal=text), csu_id, pinned, deletions, not_held
    )


def sealed_unit_key(
    bundle: Path,
    *,
    fleet_ca: Sequence[x509.Certificate] | None,
    crls: Sequence[x509.CertificateRevocationList] = (),
    csu_key: ed25519.Ed25519PublicKey | None = None,
) -> ed25519.Ed25519PublicKey | None:
    """The unit key of a CSU bundle :func:`verify_csu_bundle` refused, when its seal still
    holds (with ``csu_key``'s key, if given) and the CA certifies it: what a per-segment report
    may trust. None otherwise."""
    try:
        body = (bundle / MANIFEST).read_bytes()[: MAX_MANIFEST_BYTES + 1]
        manifest = parse_manifest(body, CSU_BUNDLE_FORMAT)
        sealer = load_public_pem(str(manifest["csu_public_key"]).encode(), origin="manifest")
        if csu_key is not None and public_raw(sealer) != public_raw(csu_key):
            return None
        sealer.verify((bundle / SIGNATURE).read_bytes(), _DOMAIN + hashlib.sha256(body).digest())
        key = load_public_pem(manifest["unit_public_key"].encode(), origin="manifest")
    except (OSError, InvalidSignature, IntegrityError, VaultError, KeyError, TypeError):
        return None
    if fleet_ca is None:
        return None
    return certified_key(bundle, manifest, key, fleet_ca, crls)


def _deletions(
    bundle: Path, manifest: dict[str, Any]
) -> tuple[tuple[dict[str, Any], ...], list[str]]:
    """The deletion records the manifest lists, each signed by the key it names."""
    entry = manifest.get("deletions")
    if entry is None:
        return (), []
    if not isinstance(entry, dict):
        raise IntegrityError("manifest: deletions has the wrong type")
    data = read_listed(bundle, entry, "deletions.")
    try:
        public = load_public_pem(str(entry["public_key"]).encode(), origin="manifest deletions")
    except (KeyError, VaultError) as exc:
        raise IntegrityError(f"manifest: deletions.public_key: {exc}") from None
    records = []
    for n, line in enumerate(data.splitlines(), start=1):
        record = check_line(line, public, f"{entry['file']}:{n}")
        if record.get("unit") != manifest["device"] or record.get("camera") != manifest.get(
            "camera"
        ):
            raise IntegrityError(f"{entry['file']}:{n}: a record of another unit or camera")
        records.append(record)
    if len(records) != entry.get("count"):
        raise IntegrityError(f"{entry['file']}: holds another number of records")
    return tuple(records), [str(entry["file"])]


def _not_held(manifest: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The manifest's declarations of what the CSU does not hold (bundles made before it
    declared them have none)."""
    items = manifest.get("not_held", [])
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("what"), str) and isinstance(i.get("reason"), str)
        for i in items
    ):
        raise IntegrityError(f"{MANIFEST}: not_held has the wrong type")
    for i in items:
        if i["what"] == "mask-set" and not (
            isinstance(i.get("camera"), str) and isinstance(i.get("digest"), str)
        ):
            raise IntegrityError(f"{MANIFEST}: not_held: a mask set without camera and digest")
    return tuple(items)


def _masks_accounted(verified: VerifiedBundle, not_held: Sequence[dict[str, Any]]) -> None:
    """Every mask set a segment commits to is in the bundle or declared not held: a CSU that
    left one out in silence would hide which masks were in force."""
    declared = {(i["camera"], i["digest"]) for i in not_held if i["what"] == "mask-set"}
    for seg in verified.segments:
        h = seg.header
        for m in h.masks:
            key = (h.camera_id, m.committed.mask_set)
            if key not in verified.mask_sets and (key[0], key[1].hex()) not in declared:
                raise IntegrityError(
                    f"{h.camera_id}#{h.sequence}: commits to mask set "
                    f"{m.committed.mask_set.hex()[:16]}…, neither in the bundle nor declared "
                    "not held"
                )


def manifest_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def dumps(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()

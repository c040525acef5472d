"""``edge-csu keygen`` and ``edge-csu open``: recipient keys and evidence bundles at the CSU."""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.identity import load_public_pem
from edge.vault import maskhistory, open_bundle
from edge.vault.bundle import VerifiedBundle, open_verified
from edge.vault.bundle_events import open_events
from edge.vault.recipient_keys import (
    RecipientPrivate,
    keypair_paths,
    load_private,
    rotate_keypair,
    write_keypair,
)

from ..cli.entry import describe_os_error
from ..clihelp import add_command
from ..config import RecipientKem
from ..errors import IntegrityError, VaultError
from ..vault.remux import TimeGap
from . import bundlefile
from .bundlefile import is_bundle_file

EXIT_PARTIAL = 3
"""``edge-csu open``: the bundle verified, but its export was partial."""


def register(sub: Any) -> None:
    keygen = add_command(
        sub,
        "keygen",
        help="create a recipient key pair (private key mode 0600); never overwrites a key",
        description="Create the key pair recordings are sealed to: NAME.pub.json goes to the "
        "units ([vault] csu_public_key), NAME.key.json (mode 0600) stays at the CSU and opens "
        "evidence bundles. An existing key is never overwritten; --rotate replaces it and keeps "
        "the old files under dated names.",
        example=[
            ("edge-csu keygen --out /secure/csu", "csu.pub.json and csu.key.json"),
            ("edge-csu keygen --out /secure/escrow --name escrow", "a second recipient"),
            ("edge-csu keygen --out /secure/csu --rotate", "a new pair; the old one is kept"),
        ],
    )
    keygen.add_argument("--out", type=Path, required=True, help="directory for the key files")
    keygen.add_argument("--name", default="csu", help="file name prefix (csu, escrow, ...)")
    keygen.add_argument(
        "--kem",
        choices=[k.value for k in RecipientKem],
        default=RecipientKem.MLKEM768_X25519.value,
        help="HPKE KEM (default: the post-quantum hybrid)",
    )
    keygen.add_argument(
        "--rotate",
        action="store_true",
        help="replace the existing key pair NAME; the old files are kept under dated names "
        "(recordings sealed to the old key still need it)",
    )
    keygen.add_argument(
        "--yes", action="store_true", help="with --rotate: confirm without the interactive question"
    )
    keygen.set_defaults(func=_keygen)

    opener = add_command(
        sub,
        "open",
        help="verify an evidence bundle and write a playable MP4",
        description="Verify an evidence bundle completely, then decrypt one camera and remux it "
        "into an MP4. Exit 0: complete and verified; 3: verified but PARTIAL (the export could "
        "not carry parts of its range intact: they are listed); 1: refused; 2: error.",
        example=[
            (
                "edge-csu open /media/usb/pv42 --key /secure/csu/csu.key.json --ca city-root.pem "
                "--out clip.mp4",
                "the first camera, checked against the city's CA",
            ),
            (
                "edge-csu open pv42 --key csu.key.json --ca city-root.pem --crl crl.pem "
                "--camera cam2 --out cam2.mp4",
                "another camera, with the CA's revocation list",
            ),
        ],
    )
    opener.add_argument(
        "bundle",
        type=Path,
        help="evidence bundle directory written by `edgectl export`, or a bundle file (.tar) "
        "downloaded from the CSU console",
    )
    opener.add_argument("--key", type=Path, required=True, help="recipient private key file")
    opener.add_argument("--out", type=Path, required=True, help="MP4 file to write")
    opener.add_argument("--camera", default=None, help="camera to extract (default: the first)")
    opener.add_argument(
        "--ca",
        type=Path,
        default=None,
        metavar="FLEET_CA",
        help="the city's video CA (PEM; its self-signed certificates are the trust anchors): "
        "the bundle's evidence certificate must chain to it at the time of the recording",
    )
    opener.add_argument(
        "--crl", type=Path, action="append", default=[], help="with --ca: CRL file(s) (PEM)"
    )
    opener.add_argument(
        "--unit-key", type=Path, default=None, help="expected unit public key (PEM) to pin"
    )
    opener.add_argument(
        "--trust-bundle-key",
        action="store_true",
        help="trust the key inside the bundle (demos only: proves nothing about its origin)",
    )
    opener.add_argument(
        "--overlay-masks",
        action="store_true",
        help="also write OUT.masks.mp4: a re-encoded review copy with the outlines of the "
        "privacy masks in force at each frame (the clip itself stays untouched)",
    )
    opener.add_argument(
        "--receipt-key",
        type=Path,
        default=None,
        help="the CSU's receipt public key (PEM): every receipt in the bundle must check",
    )
    opener.add_argument(
        "--csu-key",
        type=Path,
        default=None,
        help="a CSU bundle file: the CSU's audit public key (PEM); the bundle must be sealed by it",
    )
    opener.set_defaults(func=_open)


def _load_trust(
    ca: Path | None, crl_files: list[Path]
) -> tuple[list[x509.Certificate] | None, list[x509.CertificateRevocationList]]:
    if ca is None:
        return None, []
    try:
        fleet_ca = x509.load_pem_x509_certificates(ca.read_bytes())
        crls = [x509.load_pem_x509_crl(path.read_bytes()) for path in crl_files]
    except OSError as exc:
        raise VaultError(f"cannot load the trust anchor: {describe_os_error(exc)}") from None
    except ValueError as exc:
        raise VaultError(
            f"cannot load the trust anchor: not PEM certificates/CRLs ({exc})"
        ) from None
    return fleet_ca, crls


def _print_masks(verified: VerifiedBundle) -> None:
    """Which privacy masks held during each second, from the segments' signed commitments."""
    seconds = maskhistory.per_second(verified.mask_timeline())
    for camera, first, last, text in maskhistory.runs(seconds):
        start = datetime.fromtimestamp(first, UTC).isoformat(timespec="seconds")
        end = datetime.fromtimestamp(last + 1, UTC).isoformat(timespec="seconds")
        print(f"  masks {camera} {start} → {end}: {text}")


def _print_receipts(verified: VerifiedBundle) -> None:
    """Which segments the CSU receipted (directly or through the chain), and when."""
    if not verified.receipts_checked:
        if verified.receipts:
            print(
                f"  receipts: {len(verified.receipts)} carried, NOT checked "
                "(give the CSU's receipt key with --receipt-key)"
            )
        return
    covered = verified.receipt_coverage()
    for camera in sorted({c.segment.header.camera_id for c in covered}):
        mine = [c for c in covered if c.segment.header.camera_id == camera]
        anchored = [c for c in mine if c.receipt is not None]
        direct = sum(1 for c in anchored if c.direct)
        line = f"  receipts {camera}: {len(anchored)} of {len(mine)} segment(s) held by the CSU"
        if anchored:
            times = [c.receipt.csu_time_ns for c in anchored if c.receipt is not None]
            first = datetime.fromtimestamp(min(times) / 1e9, UTC).isoformat(timespec="seconds")
            last = datetime.fromtimestamp(max(times) / 1e9, UTC).isoformat(timespec="seconds")
            line += f" ({direct} receipted, {len(anchored) - direct} through the chain; "
            line += f"CSU time {first} → {last})"
        print(line)


def _keygen(args: argparse.Namespace) -> int:
    kem = RecipientKem(args.kem)
    if args.yes and not args.rotate:
        raise VaultError("--yes goes with --rotate")
    if not args.rotate:
        pub, key = write_keypair(args.out, kem, args.name)
    else:
        _, held = keypair_paths(args.out, args.name)
        if not args.yes and not _confirmed(held):
            print("edge-csu: rotation cancelled; nothing changed", file=sys.stderr)
            return 1
        pub, key, archived = rotate_keypair(args.out, kem, args.name)
        for path in archived:
            print(f"kept:        {path}  (the old key: recordings sealed to it still need it)")
    print(f"public key:  {pub}  (vault.csu_public_key on the units)")
    print(f"private key: {key}  (mode 0600; keep it off the units)")
    return 0


def _confirmed(held: Path) -> bool:
    """Ask the operator to type ``rotate``; refuse when nobody is there to answer."""
    if not sys.stdin.isatty():
        raise VaultError("--rotate without a terminal needs --yes to confirm")
    print(f"Rotate {held}? Units keep sealing to the old key until their configuration changes;")
    print("the old key is kept beside the new one. Type 'rotate' to confirm: ", end="", flush=True)
    return sys.stdin.readline().strip() == "rotate"


def _open(args: argparse.Namespace) -> int:
    if args.trust_bundle_key and (args.ca or args.unit_key):
        raise VaultError("--trust-bundle-key goes without --ca and --unit-key")
    if args.crl and args.ca is None:
        raise VaultError("--crl goes with --ca")
    if not args.bundle.exists():
        raise VaultError(
            f"no bundle at {args.bundle}: check the path (the directory edgectl export wrote; "
            "is the stick mounted?)"
        )
    if not args.bundle.is_dir() and not is_bundle_file(args.bundle):
        raise VaultError(
            f"{args.bundle} is a file, not a bundle: give the directory edgectl export wrote "
            "or the bundle file (.tar) downloaded from the CSU console"
        )
    if args.csu_key is not None and args.bundle.is_dir():
        raise VaultError("--csu-key goes with a CSU bundle file (.tar)")
    private = load_private(args.key)
    pinned = None
    if args.unit_key is not None:
        pinned = load_public_pem(args.unit_key.read_bytes(), origin=str(args.unit_key))
    fleet_ca, crls = _load_trust(args.ca, args.crl)
    receipt_key = None
    if args.receipt_key is not None:
        receipt_key = load_public_pem(args.receipt_key.read_bytes(), origin=str(args.receipt_key))
    if args.trust_bundle_key:
        print("edge-csu: WARNING: trusting the unit key inside the bundle: this proves the bundle")
        print("  is intact, not which unit made it; verify with --ca FLEET_CA for evidence")
    if args.bundle.is_file():
        if args.trust_bundle_key:
            raise VaultError(
                "a CSU bundle file takes --ca (or --unit-key), --csu-key and --receipt-key"
            )
        return _open_csu_bundle(args, private, fleet_ca, crls, pinned, receipt_key)
    gaps: list[TimeGap] = []
    try:
        verified, packets = open_bundle(
            args.bundle,
            private,
            args.out,
            camera=args.camera,
            unit_public_key=pinned,
            fleet_ca=fleet_ca,
            crls=crls,
            trust_bundle_key=args.trust_bundle_key,
            gaps=gaps,
            receipt_key=receipt_key,
        )
    except IntegrityError as exc:
        print(f"edge-csu: REFUSED: {args.bundle}: {exc}")
        return 1
    return _report_opened(args, verified, packets, gaps, private)


def _open_csu_bundle(
    args: argparse.Namespace,
    private: RecipientPrivate,
    fleet_ca: list[x509.Certificate] | None,
    crls: list[x509.CertificateRevocationList],
    pinned: ed25519.Ed25519PublicKey | None,
    receipt_key: ed25519.Ed25519PublicKey | None,
) -> int:
    """A bundle downloaded from the CSU: unpacked into a private temporary directory (removed
    after), verified (CSU seal, then as a unit's bundle, with its receipts when given the
    CSU's receipt key), then one camera remuxed."""
    csu_key = None
    if args.csu_key is not None:
        csu_key = load_public_pem(args.csu_key.read_bytes(), origin=str(args.csu_key))
    gaps: list[TimeGap] = []
    with tempfile.TemporaryDirectory(prefix="edge-csu-open-") as tmp:
        try:
            bundlefile.unpack(args.bundle, Path(tmp))
            found = bundlefile.verify_csu_bundle(
                Path(tmp),
                fleet_ca=fleet_ca,
                crls=crls,
                unit_public_key=pinned,
                csu_key=csu_key,
                receipt_key=receipt_key,
            )
            packets = open_verified(
                found.verified, private, args.out, camera=args.camera, gaps=gaps
            )
        except IntegrityError as exc:
            print(f"edge-csu: REFUSED: {args.bundle}: {exc}")
            return 1
        m = found.verified.manifest
        print(f"CSU bundle sealed by CSU key {found.csu_key_id}, exported by {m.get('operator')!r}")
        for line in found.facts():
            print(f"  {line}")
        return _report_opened(args, found.verified, packets, gaps, private)


def _report_opened(
    args: argparse.Namespace,
    verified: VerifiedBundle,
    packets: int,
    gaps: list[TimeGap],
    private: RecipientPrivate,
) -> int:
    """What was opened, what it holds and what it lacks, for the person who opened it."""
    m = verified.manifest
    print(f"bundle {args.bundle}: verified (case {m['case']!r}, unit {m['device']!r})")
    print(f"  signing key {m.get('unit_key_id', '?')} vouched for by: {verified.trust}")
    for lost in verified.gaps:
        print(
            f"  LOSS RECORDED by the unit (signed gap record): {lost.camera_id}: {lost.describe()}"
        )
    print(f"{args.out}: {packets} frame(s), remuxed without re-encoding")
    chosen = args.camera or sorted({s.header.camera_id for s in verified.segments})[0]
    if chosen in verified.tails:
        print(
            f"  Media Signing: the signature of the clip's last GOP was taken from the next "
            f"segment (#{verified.tails[chosen].header.sequence}) into its last frame: every "
            "second of the clip verifies on its own (edge-csu verify)"
        )
    else:
        print(
            "  Media Signing: the bundle holds no segment after the range (the recording "
            "ended there, or it was exported before this was carried): the clip's last GOP "
            "stays pending in edge-csu verify (its signature is after the end of the clip)"
        )
    if verified.events:
        # The alerts and counts of the range, and their snapshots, opened beside the clip.
        events_dir = args.out.with_name(args.out.stem + "-events")
        shots = open_events(verified.events, private, events_dir)
        print(
            f"{events_dir}: {len(verified.events)} signed event(s) in events.jsonl, "
            f"{shots} snapshot(s) as <event id>.jpg"
        )
    for entry in m.get("events_damaged", []):
        print(f"  event left out by the unit (did not verify): {entry['file']}: {entry['detail']}")
    # Times are true times: what was not recorded is a gap in the clip, and named here.
    for gap in gaps:
        at = datetime.fromtimestamp(gap.after_wall_ns / 1e9, UTC).isoformat(timespec="seconds")
        print(f"  time gap: nothing recorded for {gap.seconds:.1f} s after {at}")
    _print_masks(verified)
    _print_receipts(verified)
    if args.overlay_masks:
        from .overlay import write_overlay

        mine = [s for s in verified.segments if s.header.camera_id == chosen]
        spans = [s for s in verified.mask_timeline() if s.camera == chosen]
        review, frames = write_overlay(args.out, spans, mine[0].header.start_wall_ns)
        print(f"{review}: {frames} frame(s) with the privacy masks drawn (review copy, re-encoded)")
    if verified.partial:
        for part in verified.damaged:
            print(f"  damaged: {part}")
        who = "the CSU" if verified.seal else "the unit"  # a CSU bundle says who sealed it
        print(
            f"PARTIAL: {who} could not export {len(verified.damaged)} part(s) of the range "
            "intact (declared in the signed manifest, listed above)"
        )
        return EXIT_PARTIAL
    return 0

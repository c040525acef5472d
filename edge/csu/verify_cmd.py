"""``edge-csu verify``: what an evidence bundle proves, second by second, without opening it.

A bundle is a unit's (``edgectl export``, a directory) or the CSU's (downloaded from the
console, one ``.tar`` file: :mod:`edge.csu.bundlefile`); both go through the same checks of the
unit's signatures, chain, losses and certificate.

Checks the bundle's seal (signed manifest, every file listed and intact), the evidence
certificate against the city's CA at the recording dates, each camera's segment chain and its
recorded losses, the mask commitments and, with the CSU's receipt key, the receipts; then prints
which seconds are authentic, missing or not authentic (``--json``: the whole map). Exit 0
authentic and complete, 3 authentic but partial, 1 anything not authentic, 2 could not run.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from edge.identity import load_public_pem
from edge.vault import coverage
from edge.vault.bundle import VerifiedBundle, sealing_key, verify_bundle

from ..clihelp import add_command
from ..errors import IntegrityError, VaultError
from . import bundlefile
from .bundlefile import is_bundle_file
from .vault_cmd import _load_trust


def register(sub: Any) -> None:
    verify = add_command(
        sub,
        "verify",
        help="check an evidence bundle or a signed video file; print what each second proves",
        description="Check an evidence bundle without opening it: the seal (signed manifest, "
        "every file), the evidence certificate at the recording dates, each camera's chain and "
        "losses, the privacy-mask commitments and, with --receipt-key, the CSU's receipts. Or "
        "check an H.264 MP4 (from edge-csu open, or any ONVIF Media Signing camera) GOP by GOP. "
        "Then a per-second coverage map (authentic, missing, unsigned, pending, not authentic). "
        "Exit 0: authentic and complete; 3: authentic but partial (or a pending last GOP); "
        "1: something is not authentic or nothing is signed; 2: error.",
        example=[
            (
                "edge-csu verify /media/usb/pv42 --ca city-root.pem",
                "checked against the city's CA",
            ),
            (
                "edge-csu verify PV-2026_0042-unit-a-street.tar --ca city-root.pem "
                "--csu-key audit-key.pub.pem",
                "a bundle downloaded from the CSU console, its seal pinned to the CSU's key",
            ),
            (
                "edge-csu verify pv42 --ca city-root.pem --crl crl.pem "
                "--receipt-key receipt-key.pub.pem --json",
                "with revocations and receipts, as JSON",
            ),
            (
                "edge-csu verify clip.mp4 --ca city-root.pem",
                "a clip's ONVIF Media Signing, GOP by GOP",
            ),
        ],
    )
    verify.add_argument(
        "target",
        type=Path,
        help="evidence bundle directory written by `edgectl export`, a bundle file (.tar) "
        "downloaded from the CSU console, or an H.264 MP4 file",
    )
    verify.add_argument(
        "--ca",
        type=Path,
        default=None,
        metavar="ROOT",
        help="the city's video CA (PEM): the bundle's evidence certificate must chain to it at "
        "the time of the recording",
    )
    verify.add_argument(
        "--crl", type=Path, action="append", default=[], help="with --ca: CRL file(s) (PEM)"
    )
    verify.add_argument(
        "--unit-key",
        type=Path,
        default=None,
        help="instead of --ca: the unit's public key (PEM), pinned",
    )
    verify.add_argument(
        "--receipt-key",
        type=Path,
        default=None,
        help="the CSU's receipt public key (PEM): every receipt in the bundle must check",
    )
    verify.add_argument(
        "--key",
        type=Path,
        default=None,
        help="a bundle: the recipient private key, to also check the video's own signatures "
        "(ONVIF Media Signing) after decryption, in memory",
    )
    verify.add_argument(
        "--recorded-at",
        default=None,
        metavar="TIME",
        help="a file whose signed times are not UTC: check its certificates at this date "
        "(ISO 8601)",
    )
    verify.add_argument(
        "--csu-key",
        type=Path,
        default=None,
        help="a CSU bundle file: the CSU's audit public key (PEM, audit-key.pub.pem); the "
        "bundle must be sealed by it",
    )
    verify.add_argument("--json", action="store_true", help="the whole report as JSON")
    verify.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    if args.ca is None and args.unit_key is None:
        raise VaultError("give the trust anchor: --ca ROOT (the city's CA) or --unit-key PEM")
    if args.crl and args.ca is None:
        raise VaultError("--crl goes with --ca")
    if not args.target.exists():
        raise VaultError(f"{args.target}: no such bundle or file")
    fleet_ca, crls = _load_trust(args.ca, args.crl)
    pinned = None
    if args.unit_key is not None:
        pinned = load_public_pem(args.unit_key.read_bytes(), origin=str(args.unit_key))
    if args.csu_key is not None and not is_bundle_file(args.target):
        raise VaultError("--csu-key goes with a CSU bundle file (.tar)")
    if is_bundle_file(args.target):
        report = _verify_csu_bundle(args, fleet_ca, crls, pinned)
        _show(report, as_json=args.json)
        return report.exit_status
    if not args.target.is_dir():
        report = _verify_file(args.target, fleet_ca, pinned, args.recorded_at)
        _show(report, as_json=args.json)
        return report.exit_status
    receipt_key = None
    if args.receipt_key is not None:
        receipt_key = load_public_pem(args.receipt_key.read_bytes(), origin=str(args.receipt_key))
    try:
        verified = verify_bundle(
            args.target,
            unit_public_key=pinned,
            fleet_ca=fleet_ca,
            crls=crls,
            receipt_key=receipt_key,
        )
    except IntegrityError as exc:
        key = pinned or sealing_key(args.target, fleet_ca=fleet_ca, crls=crls)
        report = coverage.from_refused(args.target, str(exc), key)
    else:
        report = coverage.from_verified(verified)
        if args.key is not None:
            _check_media(verified, report, args.key)
    _show(report, as_json=args.json)
    return report.exit_status


def _verify_csu_bundle(
    args: argparse.Namespace, fleet_ca: Any, crls: Any, pinned: Any
) -> coverage.Report:
    """A bundle downloaded from the CSU: unpacked into a private temporary directory (removed
    after), its CSU seal checked, then everything else as for a unit's bundle."""
    import tempfile

    csu_key = None
    if args.csu_key is not None:
        csu_key = load_public_pem(args.csu_key.read_bytes(), origin=str(args.csu_key))
    receipt_key = None
    if args.receipt_key is not None:
        receipt_key = load_public_pem(args.receipt_key.read_bytes(), origin=str(args.receipt_key))
    with tempfile.TemporaryDirectory(prefix="edge-csu-verify-") as tmp:
        where = Path(tmp)
        try:
            bundlefile.unpack(args.target, where)
            found = bundlefile.verify_csu_bundle(
                where,
                fleet_ca=fleet_ca,
                crls=crls,
                unit_public_key=pinned,
                csu_key=csu_key,
                receipt_key=receipt_key,
            )
        except IntegrityError as exc:
            key = pinned or bundlefile.sealed_unit_key(
                where, fleet_ca=fleet_ca, crls=crls, csu_key=csu_key
            )
            report = coverage.from_refused(where, str(exc), key)
        else:
            report = coverage.from_verified(found.verified)
            report.facts += found.facts()
            if args.key is not None:
                _check_media(found.verified, report, args.key)
    report.source = str(args.target)
    return report


def _show(report: coverage.Report, *, as_json: bool) -> None:
    if as_json:
        print(report.as_json())
    else:
        _print(report)


def _check_media(verified: VerifiedBundle, report: coverage.Report, key_file: Path) -> None:
    """Each camera decrypted (into a private temporary directory, removed after) and its
    Media Signing checked with the same trust as the bundle."""
    import tempfile

    from edge.vault.bundle import open_verified
    from edge.vault.recipient_keys import load_private
    from edge.video import msvalidate

    private = load_private(key_file)
    cameras = sorted({s.header.camera_id for s in verified.segments})
    with tempfile.TemporaryDirectory(prefix="edge-csu-verify-") as tmp:
        for camera in cameras:
            clip = Path(tmp) / f"{camera}.mp4"
            open_verified(verified, private, clip, camera=camera)
            # The very key that signed the bundle (already vouched for by the CA or pinned):
            # video signed by any other key, even one the CA certified, does not count.
            media = msvalidate.validate(
                msvalidate.read_access_units(clip), pinned=verified.public_key
            )
            coverage.merge_media(report, camera, media)


def _verify_file(
    path: Path, fleet_ca: Any, pinned: Any, recorded_at: str | None
) -> coverage.Report:
    """ONVIF Media Signing of a video file, GOP by GOP."""
    from edge.video import msvalidate

    when = None
    if recorded_at is not None:
        try:
            when = dt.datetime.fromisoformat(recorded_at)
        except ValueError:
            raise VaultError(f"--recorded-at {recorded_at!r}: not an ISO 8601 date") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    try:
        units = msvalidate.read_access_units(path)
    except IntegrityError as exc:
        # A file whose samples do not even parse is damaged evidence, not a usage error.
        return coverage.Report(str(path), coverage.Verdict.NOT_AUTHENTIC, reasons=[str(exc)])
    media = msvalidate.validate(units, anchors=fleet_ca, pinned=pinned, recorded_at=when)
    return coverage.from_media(str(path), media)


def _print(report: coverage.Report) -> None:
    verdict = report.verdict.value.replace("-", " ").upper()
    print(f"{report.source}: {verdict}")
    if report.trust:
        print(f"  trust: {report.trust}")
    for line in report.facts:
        print(f"  {line}")
    for line in report.reasons:
        print(f"  {'REFUSED' if report.exit_status == 1 else 'NOTE'}: {line}")
    for camera, first, last, state in report.runs():
        start, end = coverage.iso(first), coverage.iso(last + 1)
        if camera.endswith("(media time)"):  # nothing signed places it in UTC
            start, end = f"{first} s", f"{last + 1} s"
        print(f"  {camera} {start} → {end} ({last - first + 1} s): {state}")

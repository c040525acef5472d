"""``edge-csu keygen`` and ``edge-csu open``: recipient keys and evidence bundles at the CSU."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cryptography import x509

from ..config import RecipientKem
from ..errors import IntegrityError, VaultError
from ..unitkeys import load_public_pem
from ..vault.bundle import open_bundle
from ..vault.keys import load_private, write_keypair


def register(sub: Any) -> None:
    keygen = sub.add_parser("keygen", help="create a recipient key pair (private key mode 0600)")
    keygen.add_argument("--out", type=Path, required=True, help="directory for the key files")
    keygen.add_argument("--name", default="csu", help="file name prefix (csu, escrow, ...)")
    keygen.add_argument(
        "--kem",
        choices=[k.value for k in RecipientKem],
        default=RecipientKem.MLKEM768_X25519.value,
        help="HPKE KEM (default: the post-quantum hybrid)",
    )
    keygen.set_defaults(func=_keygen)

    opener = sub.add_parser("open", help="verify an evidence bundle and write a playable MP4")
    opener.add_argument("bundle", type=Path)
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
    opener.set_defaults(func=_open)


def _load_trust(
    ca: Path | None, crl_files: list[Path]
) -> tuple[list[x509.Certificate] | None, list[x509.CertificateRevocationList]]:
    if ca is None:
        return None, []
    try:
        fleet_ca = x509.load_pem_x509_certificates(ca.read_bytes())
        crls = [x509.load_pem_x509_crl(path.read_bytes()) for path in crl_files]
    except (OSError, ValueError) as exc:
        raise VaultError(f"cannot load the trust anchor: {exc}") from None
    return fleet_ca, crls


def _keygen(args: argparse.Namespace) -> int:
    pub, key = write_keypair(args.out, RecipientKem(args.kem), args.name)
    print(f"public key:  {pub}  (vault.csu_public_key on the units)")
    print(f"private key: {key}  (mode 0600; keep it off the units)")
    return 0


def _open(args: argparse.Namespace) -> int:
    if args.trust_bundle_key and (args.ca or args.unit_key):
        raise VaultError("--trust-bundle-key goes without --ca and --unit-key")
    if args.crl and args.ca is None:
        raise VaultError("--crl goes with --ca")
    private = load_private(args.key)
    pinned = None
    if args.unit_key is not None:
        pinned = load_public_pem(args.unit_key.read_bytes(), origin=str(args.unit_key))
    fleet_ca, crls = _load_trust(args.ca, args.crl)
    if args.trust_bundle_key:
        print("edge-csu: WARNING: trusting the unit key inside the bundle: this proves the bundle")
        print("  is intact, not which unit made it; verify with --ca FLEET_CA for evidence")
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
        )
    except IntegrityError as exc:
        print(f"edge-csu: REFUSED: {args.bundle}: {exc}")
        return 1
    m = verified.manifest
    print(f"bundle {args.bundle}: verified (case {m['case']!r}, unit {m['device']!r})")
    print(f"  signing key {m.get('unit_key_id', '?')} vouched for by: {verified.trust}")
    for gap in verified.gaps:
        print(f"  LOSS RECORDED by the unit (signed gap record): {gap.camera_id}: {gap.describe()}")
    print(f"{args.out}: {packets} frame(s), remuxed without re-encoding")
    return 0

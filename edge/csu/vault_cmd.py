"""``edge-csu keygen`` and ``edge-csu open``: recipient keys and evidence bundles at the CSU."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import RecipientKem
from ..errors import IntegrityError
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
        "--unit-key", type=Path, default=None, help="expected unit public key (PEM) to pin"
    )
    opener.set_defaults(func=_open)


def _keygen(args: argparse.Namespace) -> int:
    pub, key = write_keypair(args.out, RecipientKem(args.kem), args.name)
    print(f"public key:  {pub}  (vault.csu_public_key on the units)")
    print(f"private key: {key}  (mode 0600; keep it off the units)")
    return 0


def _open(args: argparse.Namespace) -> int:
    private = load_private(args.key)
    pinned = None
    if args.unit_key is not None:
        pinned = load_public_pem(args.unit_key.read_bytes(), origin=str(args.unit_key))
    try:
        verified, packets = open_bundle(
            args.bundle, private, args.out, camera=args.camera, unit_public_key=pinned
        )
    except IntegrityError as exc:
        print(f"edge-csu: REFUSED: {args.bundle}: {exc}")
        return 1
    m = verified.manifest
    print(f"bundle {args.bundle}: verified (case {m['case']!r}, unit {m['device']!r})")
    if pinned is None:
        print("  note: unit key taken from the bundle; pin it with --unit-key for full trust")
    print(f"{args.out}: {packets} frame(s), remuxed without re-encoding")
    return 0

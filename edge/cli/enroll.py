"""``edgectl enroll``: unit keys and certificate request; ``--install``; ``--renew``.

See :mod:`edge.enrolment` for the checks and the order of writes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import enrolment
from ..errors import EnrolmentError
from .common import add_config_args, load_config


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "enroll",
        help="create the unit's keys and certificate request, or install the signed certificate",
        description=(
            "Without options: create missing keys (Ed25519 signing key, ECDSA P-256 TLS/EAP "
            "key) and write the certificate request keys/unit-tls.csr for the city's PKI. "
            "--install CERT checks the signed certificate and installs it; --renew makes a new "
            "TLS key and request while the current ones stay in use until --install."
        ),
    )
    add_config_args(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--install", type=Path, metavar="CERT", help="signed certificate (PEM)")
    mode.add_argument("--renew", action="store_true", help="new TLS key and request")
    mode.add_argument("--status", action="store_true", help="certificate expiry as JSON")
    parser.add_argument(
        "--ca", type=Path, metavar="CHAIN", help="with --install: the city's CA chain (PEM)"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    keys = cfg.unit.data_dir / "keys"
    identity = cfg.dot1x.identity or cfg.unit.id
    if args.status:
        status = enrolment.read_certificate_status(
            keys / enrolment.TLS_CERT_NAME,
            warning_days=cfg.dot1x.expiry_warning_days,
            ca_path=keys / enrolment.CA_CHAIN_NAME,
        )
        status["renewal_pending"] = (keys / enrolment.TLS_NEW_KEY_NAME).exists()
        print(json.dumps(status, indent=2))
        return 1 if status.get("warning") else 0
    if args.install is not None:
        try:
            cert_data = args.install.read_bytes()
            ca_data = args.ca.read_bytes() if args.ca else None
        except OSError as exc:
            raise EnrolmentError(f"cannot read: {exc}") from None
        done = enrolment.install(keys, cert_data, cfg.unit.id, ca_data=ca_data)
        what = "renewed certificate" if done.renewed else "certificate"
        print(f"installed {what} {done.serial} in {done.cert_path}")
        print(f"valid until {done.not_after:%Y-%m-%d}")
        return 0
    if args.ca is not None:
        raise EnrolmentError("--ca goes with --install")
    result = enrolment.enrol(keys, cfg.unit.id, identity, renew=args.renew)
    print(f"signing key id {result.signing_key_id}")
    print(f"TLS key {result.key_path} ({'new' if result.created_key else 'existing'})")
    print(f"certificate request {result.csr_path} (CN={cfg.unit.id}, SAN DNS:{identity})")
    print("next: have it signed by the city's video CA, then: edgectl enroll --install CERT")
    return 0

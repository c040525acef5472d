"""``edgectl enroll``: unit keys and certificate request; ``--install``; ``--renew``.

See :mod:`edge.identity.enrolment` for the checks and the order of writes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge.identity import enrolment

from .. import config as config_mod
from ..clihelp import add_command
from ..errors import EnrolmentError
from .common import add_config_args, load_config
from .entry import describe_os_error


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "enroll",
        help="create the unit's keys and certificate request, or install the signed certificate",
        description=(
            "Without options: create missing keys (Ed25519 signing key, ECDSA P-256 TLS/EAP "
            "key) and write the certificate requests keys/unit-tls.csr (TLS/EAP) and "
            "keys/unit-signing.csr (evidence signing) for the city's PKI. --install CERT... "
            "checks the signed certificates (either or both, in one file or several) and "
            "installs them; --renew makes a new TLS key and request while the current ones stay "
            "in use until --install. --status tells when both certificates expire (exit 1 "
            "when one needs attention)."
        ),
        example=[
            ("edgectl enroll", "keys and both certificate requests (idempotent)"),
            (
                "edgectl enroll --install unit-tls.crt unit-signing.crt --ca chain.pem",
                "the signed certificates and the city's CA chain",
            ),
            ("edgectl enroll --status", "expiry of both certificates"),
            ("edgectl enroll --renew", "a new TLS key and request before expiry"),
        ],
    )
    add_config_args(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--install",
        type=Path,
        nargs="+",
        metavar="CERT",
        help="signed certificate(s) (PEM): TLS, evidence-signing, or both",
    )
    mode.add_argument("--renew", action="store_true", help="new TLS key and request")
    mode.add_argument(
        "--status", action="store_true", help="expiry of the TLS and evidence certificates"
    )
    parser.add_argument(
        "--json", action="store_true", help="with --status: print one JSON object, for scripts"
    )
    parser.add_argument(
        "--ca", type=Path, metavar="CHAIN", help="with --install: the city's CA chain (PEM)"
    )
    parser.set_defaults(func=_run)


def _certificate_lines(title: str, cert: dict[str, Any]) -> list[str]:
    if not cert.get("present"):
        return [f"{title}: none", f"  ! {cert.get('warning')}"]
    chains = {True: "yes", False: "NO", None: "unknown (no CA chain installed)"}
    lines = [
        f"{title}: {cert.get('subject')} (serial {cert.get('serial')})",
        f"  valid until {cert.get('not_after')} ({cert.get('days_left', 0):.0f} days left)",
        f"  issuer {cert.get('issuer')}",
    ]
    if "chains_to_ca" in cert:
        lines.append(f"  chains to the city's CA: {chains[cert['chains_to_ca']]}")
    if "matches_signing_key" in cert:
        lines.append(
            f"  certifies the unit's signing key: {'yes' if cert['matches_signing_key'] else 'NO'}"
        )
    if cert.get("warning"):
        lines.append(f"  ! {cert['warning']}")
    return lines


def format_certificate_status(status: dict[str, Any]) -> str:
    """``enroll --status`` for people: each certificate, its expiry and what needs doing."""
    lines = _certificate_lines("TLS/802.1X certificate", status)
    if status.get("renewal_pending"):
        lines.append("  renewal pending: install the signed new certificate (`--install`)")
    lines += _certificate_lines("evidence-signing certificate", status["evidence_certificate"])
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    keys = cfg.unit.data_dir / "keys"
    identity = cfg.dot1x.identity or cfg.unit.id
    if args.status:
        # enroll --status's own document: the TLS certificate's status and more beside it.
        status: dict[str, Any] = dict(
            enrolment.read_certificate_status(
                keys / enrolment.TLS_CERT_NAME,
                warning_days=cfg.dot1x.expiry_warning_days,
                ca_path=keys / enrolment.CA_CHAIN_NAME,
            )
        )
        status["renewal_pending"] = (keys / enrolment.TLS_NEW_KEY_NAME).exists()
        signing = enrolment.signing_certificate_status(
            keys, warning_days=cfg.dot1x.expiry_warning_days
        )
        status["evidence_certificate"] = signing
        if args.json:
            print(json.dumps(status, indent=2, ensure_ascii=False))
        else:
            print(format_certificate_status(status))
        return 1 if status.get("warning") or signing.get("warning") else 0
    if not config_mod.is_provisioned(cfg):
        # Requests and certificates name the unit: none may be made for an id it does not have.
        raise EnrolmentError(
            "this unit is not provisioned (no unit id yet): an installer runs edgectl "
            "provision --unit-id ID --camera cam1=SOURCE, which writes the requests"
        )
    if args.install is not None:
        try:
            cert_data = b"".join(path.read_bytes() for path in args.install)
            ca_data = args.ca.read_bytes() if args.ca else None
        except OSError as exc:
            raise EnrolmentError(f"cannot read {describe_os_error(exc)}") from None
        installed = enrolment.install_certificates(keys, cert_data, cfg.unit.id, ca_data=ca_data)
        for done in installed:
            what = {"tls": "TLS certificate", "evidence": "evidence-signing certificate"}
            renewed = "renewed " if done.renewed else ""
            print(f"installed {renewed}{what[done.kind]} {done.serial} in {done.cert_path}")
            print(f"  valid until {done.not_after:%Y-%m-%d}")
        if not (keys / "unit-signing.crt").exists():
            print("note: no evidence-signing certificate yet: install the signed")
            print("  keys/unit-signing.csr too, or exports verify only with a pinned unit key")
        return 0
    if args.ca is not None:
        raise EnrolmentError("--ca goes with --install")
    result = enrolment.enrol(keys, cfg.unit.id, identity, renew=args.renew)
    print(f"signing key id {result.signing_key_id}")
    print(f"TLS key {result.key_path} ({'new' if result.created_key else 'existing'})")
    print(f"certificate request {result.csr_path} (CN={cfg.unit.id}, SAN DNS:{identity})")
    print(f"evidence-signing request {result.signing_csr_path} (CN={cfg.unit.id})")
    print("next: have both signed by the city's video CA, then:")
    # --ca too: without the city's chain in keys/ca.pem the uplink cannot verify the CSU.
    print("  edgectl enroll --install unit-tls.crt unit-signing.crt --ca city-ca-chain.pem")
    return 0

"""``edge-csu ca``: the small video CA (init, sign, issue, revoke, crl). See :mod:`edge.csu.ca`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cryptography import x509

from ..errors import CaError
from ..unitkeys import write_new_private
from ..vault import evidence
from .ca import Profile, RevocationReason, VideoCA, cert_pem, key_pem, write_atomic


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "ca", help="small video CA: root + video sub-CA, sign unit requests, revoke, CRL"
    )
    csub = parser.add_subparsers(dest="ca_command", required=True, metavar="ACTION")

    init = csub.add_parser("init", help="create a root and a video sub-CA in a directory")
    init.add_argument("dir", type=Path)
    init.add_argument("--organisation", default="Ville - vidéoprotection")
    init.set_defaults(func=_init)

    sign = csub.add_parser("sign", help="sign a unit's certificate request (edgectl enroll)")
    sign.add_argument("dir", type=Path)
    sign.add_argument("csr", type=Path)
    sign.add_argument(
        "--profile",
        choices=[p.value for p in Profile],
        default=None,
        help="default: evidence for an Ed25519 key (unit-signing.csr), client for another",
    )
    sign.add_argument("--days", type=int, default=365)
    sign.add_argument("--out", type=Path, help="certificate file (default: CSR name .crt)")
    sign.set_defaults(func=_sign)

    issue = csub.add_parser("issue", help="make a key and certificate (RADIUS server, CSU)")
    issue.add_argument("dir", type=Path)
    issue.add_argument("name", help="DNS name of the server (or a unit id with --profile client)")
    issue.add_argument("--profile", choices=["server", "client"], default="server")
    issue.add_argument("--days", type=int, default=365)
    issue.add_argument(
        "--out",
        type=Path,
        required=True,
        help="prefix: writes OUT.key (never over an existing key), OUT.crt",
    )
    issue.set_defaults(func=_issue)

    revoke = csub.add_parser("revoke", help="revoke a certificate and publish a new CRL")
    revoke.add_argument("dir", type=Path)
    revoke.add_argument("what", help="serial number (hex) or a certificate file")
    revoke.add_argument(
        "--reason", choices=[r.value for r in RevocationReason], default="unspecified"
    )
    revoke.set_defaults(func=_revoke)

    crl = csub.add_parser("crl", help="publish a fresh CRL (republish well before it expires)")
    crl.add_argument("dir", type=Path)
    crl.add_argument("--days", type=int, default=7, help="validity of the CRL")
    crl.add_argument("--out", type=Path, help="also copy the CRL there")
    crl.set_defaults(func=_crl)

    lst = csub.add_parser("list", help="certificates issued, with their revocation state")
    lst.add_argument("dir", type=Path)
    lst.set_defaults(func=_list)


def _init(args: argparse.Namespace) -> int:
    ca = VideoCA.init(args.dir, organisation=args.organisation)
    print(f"CA created in {args.dir}")
    print(f"  give relying parties (RADIUS server, units' ca.pem): {ca.directory / 'chain.pem'}")
    print(f"  keep offline: {ca.directory / 'root.key'}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    try:
        csr = x509.load_pem_x509_csr(args.csr.read_bytes())
    except (OSError, ValueError) as exc:
        raise CaError(f"{args.csr}: not a PEM certificate request: {exc}") from None
    ca = VideoCA.open(args.dir)
    profile = Profile(args.profile) if args.profile else None
    cert = ca.sign_csr(csr, profile=profile, days=args.days)
    out: Path = args.out or args.csr.with_suffix(".crt")
    write_atomic(out, cert_pem(cert) + ca.chain_pem)
    kind = "evidence-signing" if profile_of(cert) == "evidence" else "TLS"
    print(
        f"{out}: {kind} certificate, serial {cert.serial_number:x}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    )
    return 0


def profile_of(cert: x509.Certificate) -> str:
    return "evidence" if evidence.profile_problem(cert) is None else "tls"


def _issue(args: argparse.Namespace) -> int:
    out: Path = args.out
    key_path = out.with_name(out.name + ".key")
    if key_path.exists():  # checked before issuing, so no certificate is made for nothing
        raise CaError(f"{key_path}: a key is already there; refusing to overwrite it")
    ca = VideoCA.open(args.dir)
    profile = Profile(args.profile)
    names = (args.name,) if profile is Profile.SERVER else ()
    key, cert = ca.issue(args.name, profile=profile, dns_names=names, days=args.days)
    write_new_private(key_path, key_pem(key))
    write_atomic(out.with_name(out.name + ".crt"), cert_pem(cert) + cert_pem(ca.sub_cert))
    print(f"{out}.crt: serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%F}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    what: str = args.what
    path = Path(what)
    if path.exists():
        serial = x509.load_pem_x509_certificates(path.read_bytes())[0].serial_number
    else:
        try:
            serial = int(what, 16)
        except ValueError:
            raise CaError(f"{what!r} is neither a file nor a hexadecimal serial") from None
    ca = VideoCA.open(args.dir)
    crl = ca.revoke(serial, RevocationReason(args.reason))
    print(f"revoked {serial:x}; CRL with {len(list(crl))} entries in {ca.directory / 'crl.pem'}")
    return 0


def _crl(args: argparse.Namespace) -> int:
    ca = VideoCA.open(args.dir)
    crl = ca.publish_crl(days=args.days)
    if args.out:
        write_atomic(args.out, ca.crl_pem)
    print(f"CRL {ca.directory / 'crl.pem'}: next update {crl.next_update_utc:%Y-%m-%d %H:%M} UTC")
    return 0


def _list(args: argparse.Namespace) -> int:
    for rec in VideoCA.open(args.dir).issued():
        state = f"revoked {rec.revoked_at:%F} ({rec.reason})" if rec.revoked_at else "valid"
        print(f"{rec.serial:x}  {rec.profile:6}  {rec.subject:30}  {rec.not_after:%F}  {state}")
    return 0

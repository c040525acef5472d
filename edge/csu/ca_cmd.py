"""``edge-csu ca``: the small video CA (init, sign, issue, revoke, crl). See :mod:`edge.csu.ca`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cryptography import x509

from edge.identity import configsigning, evidence

from ..cli.entry import describe_os_error
from ..clihelp import add_command
from ..errors import CaError
from ..fsutil import write_new_private
from .ca import Profile, RevocationReason, VideoCA, cert_pem, key_pem, write_atomic


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "ca",
        help="small video CA: root + video sub-CA, sign unit requests, revoke, CRL",
        description="A small video CA for cities without their own PKI: a root and a video "
        "sub-CA in one directory; signs the units' certificate requests, issues server "
        "certificates (RADIUS, CSU), revokes and publishes the CRL. Nothing on the unit "
        "depends on it: any PKI issuing the same profiles will do.",
        example=[
            ("edge-csu ca init /srv/video-ca", "root + video sub-CA, chain.pem, crl.pem"),
            ("edge-csu ca sign /srv/video-ca unit-tls.csr --out unit.crt", "a unit's request"),
        ],
    )
    csub = parser.add_subparsers(dest="ca_command", required=True, metavar="ACTION")

    init = add_command(
        csub,
        "init",
        help="create a root and a video sub-CA in a directory",
        description="Create a root CA and a video sub-CA in a new directory, with chain.pem "
        "(what units and servers trust) and a first crl.pem. Keys are never overwritten.",
        example=[
            ("edge-csu ca init /srv/video-ca", "with the default organisation name"),
            (
                "edge-csu ca init /srv/video-ca --organisation 'Ville de Lyon - vidéoprotection'",
                "the city's name in the certificates",
            ),
        ],
    )
    init.add_argument("dir", type=Path, help="directory to create the CA in")
    init.add_argument(
        "--organisation",
        default="Ville - vidéoprotection",
        help="organisation (O) of the CA certificates (default %(default)r)",
    )
    init.set_defaults(func=_init)

    sign = add_command(
        csub,
        "sign",
        help="sign a unit's certificate request (edgectl enroll)",
        description="Sign a certificate request written by `edgectl enroll`. The profile "
        "follows the request's key: evidence signing for an Ed25519 key (unit-signing.csr), "
        "TLS/802.1X client for another (unit-tls.csr); a forced mismatch is refused. "
        "--profile console signs an operator's console log-in request instead (a key made on "
        "a smart card or token; its CN is the account name).",
        example=[
            ("edge-csu ca sign /srv/video-ca unit-tls.csr --out unit.crt", "client profile"),
            (
                "edge-csu ca sign /srv/video-ca unit-signing.csr --out signing.crt",
                "evidence profile",
            ),
            (
                "edge-csu ca sign /srv/video-ca a.dupont.csr --profile console --out a.dupont.crt",
                "an operator's smart-card key, for the console",
            ),
        ],
    )
    sign.add_argument("dir", type=Path, help="the CA directory (made by `edge-csu ca init`)")
    sign.add_argument("csr", type=Path, help="the unit's certificate request (PEM)")
    sign.add_argument(
        "--profile",
        choices=[p.value for p in Profile],
        default=None,
        help="default: evidence for an Ed25519 key (unit-signing.csr), client for another",
    )
    sign.add_argument(
        "--days", type=int, default=365, help="validity of the certificate (default 365)"
    )
    sign.add_argument("--out", type=Path, help="certificate file (default: CSR name .crt)")
    sign.set_defaults(func=_sign)

    issue = add_command(
        csub,
        "issue",
        help="make a key and certificate (RADIUS server, CSU, operator, console log-in, "
        "configuration signer)",
        description="Make a key and a certificate signed by the video sub-CA, for a server "
        "(the RADIUS server, the CSU receiver), with --profile client a client, with "
        "--profile operator a CSU agent who signs commands to cabinet outputs (NAME is the "
        "agent's identity; no TLS use, it cannot log in to the console), with --profile "
        "console an operator's TLS client certificate for the console log-in (NAME is the "
        "account name of edge-csu operator; the account must be marked --auth certificate, "
        "and logs in with this certificate plus its password), with --profile config the "
        "city's configuration signer (edge-csu config sign; units accept no other certificate "
        "for configuration), with --profile update the signer of update bundles (RAUC; make "
        "image). --out is a file prefix: OUT.key (mode 0600, never written over an existing "
        "key) and OUT.crt (the certificate then the sub-CA).",
        example=[
            (
                "edge-csu ca issue /srv/video-ca radius.video.city.fr --out /srv/radius/radius",
                "writes /srv/radius/radius.key and radius.crt",
            ),
            ("edge-csu ca issue /srv/video-ca csu.video.city.fr --out /etc/edge-csu/csu", "CSU"),
            (
                "edge-csu ca issue /srv/video-ca agent-dupont --profile operator --days 30 "
                "--out /etc/edge-csu/operators/agent-dupont",
                "an agent's command-signing key",
            ),
            (
                "edge-csu ca issue /srv/video-ca a.dupont --profile console --days 365 "
                "--out /root/a.dupont-console",
                "an operator's console log-in certificate (openssl pkcs12 -export for the browser)",
            ),
            (
                "edge-csu ca issue /srv/video-ca city-config --profile config "
                "--out /srv/config-signer/signer",
                "the configuration signer",
            ),
        ],
    )
    issue.add_argument("dir", type=Path, help="the CA directory (made by `edge-csu ca init`)")
    issue.add_argument(
        "name",
        help="DNS name of the server (a unit id with --profile client, an agent's identity "
        "with --profile operator, the operator's account name with --profile console)",
    )
    issue.add_argument(
        "--profile",
        choices=["server", "client", "operator", "console", "config", "update"],
        default="server",
        help="server (serverAuth, the default), client (clientAuth), operator (signs "
        "commands to cabinet outputs; no TLS use), console (clientAuth + console log-in: an "
        "operator's certificate for the console), config (configuration signing) or update "
        "(update bundles: codeSigning)",
    )
    issue.add_argument(
        "--days", type=int, default=365, help="validity of the certificate (default 365)"
    )
    issue.add_argument(
        "--out",
        type=Path,
        required=True,
        help="prefix: writes OUT.key (never over an existing key), OUT.crt",
    )
    issue.set_defaults(func=_issue)

    revoke = add_command(
        csub,
        "revoke",
        help="revoke a certificate and publish a new CRL",
        description="Revoke a certificate and publish a new CRL at once; the receiver and "
        "the RADIUS server refuse the certificate as soon as they load that CRL.",
        example=[
            (
                "edge-csu ca revoke /srv/video-ca unit.crt --reason key_compromise",
                "a stolen unit",
            ),
            ("edge-csu ca revoke /srv/video-ca 3f2a9c --reason superseded", "by serial number"),
        ],
    )
    revoke.add_argument("dir", type=Path, help="the CA directory (made by `edge-csu ca init`)")
    revoke.add_argument("what", help="serial number (hex) or a certificate file")
    revoke.add_argument(
        "--reason",
        choices=[r.value for r in RevocationReason],
        default="unspecified",
        help="revocation reason written in the CRL (default unspecified)",
    )
    revoke.set_defaults(func=_revoke)

    crl = add_command(
        csub,
        "crl",
        help="publish a fresh CRL (republish well before it expires)",
        description="Publish a fresh CRL signed by the video sub-CA. Republish it well before "
        "it expires (daily from cron with the default 7 days): a receiver with an expired CRL "
        "refuses the units.",
        example=[
            ("edge-csu ca crl /srv/video-ca --days 7", "daily, from cron"),
            ("edge-csu ca crl /srv/video-ca --out /srv/www/crl.pem", "and copy it for serving"),
        ],
    )
    crl.add_argument("dir", type=Path, help="the CA directory (made by `edge-csu ca init`)")
    crl.add_argument("--days", type=int, default=7, help="validity of the CRL")
    crl.add_argument("--out", type=Path, help="also copy the CRL there")
    crl.set_defaults(func=_crl)

    lst = add_command(
        csub,
        "list",
        help="certificates issued, with their revocation state",
        description="List the certificates this CA issued with serial, subject, expiry and "
        "revocation state.",
        example=[("edge-csu ca list /srv/video-ca", "everything issued")],
    )
    lst.add_argument("dir", type=Path, help="the CA directory (made by `edge-csu ca init`)")
    lst.set_defaults(func=_list)


def _init(args: argparse.Namespace) -> int:
    ca = VideoCA.init(args.dir, organisation=args.organisation)
    print(f"CA created in {args.dir}")
    print(f"  give relying parties (RADIUS server, units' ca.pem): {ca.directory / 'chain.pem'}")
    print(f"  keep offline: {ca.directory / 'root.key'}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    ca = VideoCA.open(args.dir)
    try:
        csr = x509.load_pem_x509_csr(args.csr.read_bytes())
    except OSError as exc:
        raise CaError(f"cannot read the request {describe_os_error(exc)}") from None
    except ValueError as exc:
        raise CaError(
            f"{args.csr}: not a PEM certificate request ({exc}): give the .csr edgectl enroll wrote"
        ) from None
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
    if configsigning.profile_problem(cert) is None:
        return "config"
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

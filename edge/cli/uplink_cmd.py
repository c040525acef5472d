"""``edgectl uplink check``: can this unit reach its CSU, and does each side accept the other?

For maintenance staff at the cabinet: it makes the same mutual TLS 1.3 connection as edged
(same pinned CA, same unit certificate), asks the CSU what it holds for this unit, and says in
words what failed and what to do. Shows no picture, sends no video. Exit 0 when the CSU
answered, 1 when the uplink is disabled, 2 when it failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from ..clihelp import add_command
from ..errors import EdgeError
from ..uplink import protocol, signing_cert
from ..uplink.tls import connect, endpoint, key_paths
from .common import add_config_args, load_config
from .entry import describe_os_error


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "uplink",
        help="check the link to the CSU",
        description="Check the link to the supervision centre (CSU) that receives the recordings.",
        example=[("edgectl uplink check", "does each side accept the other?")],
    )
    usub = parser.add_subparsers(dest="uplink_command", required=True, metavar="ACTION")
    check = add_command(
        usub,
        "check",
        help="mutual TLS handshake and the CSU's view of this unit",
        description="Make the same mutual TLS 1.3 connection as edged (same pinned CA, same "
        "unit certificate), ask the CSU what it holds for this unit, and say in words what "
        "failed and what to do. Sends no video. Exit 0 when the CSU answered, 1 when the "
        "uplink is disabled, 2 when it failed.",
        example=[
            ("edgectl uplink check", "after enrolment, or when status shows the uplink down"),
            ("edgectl uplink check --json", "for scripts"),
        ],
    )
    add_config_args(check)
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=_check)


def _cert_summary(path: Path) -> dict[str, Any]:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return {"path": str(path), "error": "not enrolled yet: run edgectl enroll"}
    except OSError as exc:
        return {"path": str(path), "error": describe_os_error(exc)}
    except ValueError:
        return {"path": str(path), "error": "not a PEM certificate: install it again"}
    return {
        "path": str(path),
        "subject": cert.subject.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "expired": cert.not_valid_after_utc < dt.datetime.now(dt.UTC),
    }


def check(cfg_args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    cfg = load_config(cfg_args)
    host, port, name = endpoint(cfg)
    _, cert_file, _ = key_paths(cfg)
    report: dict[str, Any] = {
        "enabled": cfg.uplink.enabled,
        "csu": f"{host}:{port}",
        "server_name": name,
        "unit_certificate": _cert_summary(cert_file),
    }
    if not cfg.uplink.enabled:
        report["result"] = "uplink disabled in the configuration"
        return 1, report
    try:
        conn = connect(cfg)
    except ssl.SSLCertVerificationError as exc:
        report["result"] = f"the CSU's certificate is refused: {exc.verify_message}"
        report["action"] = "check uplink.server_name and that keys/ca.pem is the city's CA chain"
        return 2, report
    except (OSError, EdgeError) as exc:
        report["result"] = f"cannot connect: {exc}"
        report["action"] = "check the wired link, 802.1X (edgectl dot1x status) and the CSU URL"
        return 2, report
    try:
        sock = conn.sock
        if isinstance(sock, ssl.SSLSocket):
            peer = sock.getpeercert()
            report["tls"] = {"version": sock.version(), "cipher": (sock.cipher() or ("?",))[0]}
            report["csu_certificate_not_after"] = peer.get("notAfter") if peer else None

        def request(
            method: str, path: str, data: bytes | None, ctype: str | None
        ) -> tuple[int, bytes]:
            conn.request(method, path, body=data, headers={"Content-Type": ctype} if ctype else {})
            answer = conn.getresponse()
            return answer.status, answer.read()

        # As edged does: the CSU may know this unit only through its evidence certificate.
        presented = signing_cert.present(request, cfg.unit.id, cfg.unit.data_dir)
        report["signing_certificate"] = presented
        conn.request("GET", protocol.cursor_path(cfg.unit.id))
        response = conn.getresponse()
        body = response.read()
    except (OSError, EdgeError) as exc:
        # TLS 1.3 reports a refused client certificate only when the first answer is read.
        report["result"] = f"the CSU closed the connection: {exc}"
        report["action"] = (
            "the CSU refused this unit's certificate (expired, revoked or another CA): "
            "edgectl enroll --status, then renew"
        )
        return 2, report
    finally:
        conn.close()
    if response.status != 200:
        try:
            reason = str(json.loads(body).get("error", ""))
        except (ValueError, AttributeError):
            reason = body[:200].decode(errors="replace")
        report["result"] = f"the CSU answered {response.status}: {reason}"
        if "revoked" in reason:
            report["action"] = "this unit's certificate was revoked: edgectl enroll --renew"
        elif "signing certificate" in reason:
            report["action"] = "the CSU refused the evidence-signing certificate: " + (
                "edgectl enroll --status; have the city's CA certify the signing key again"
            )
        elif "not enrolled" in reason:
            report["action"] = (
                "install the evidence-signing certificate (edgectl enroll --install), which the "
                "unit presents to the CSU itself, or ask the CSU to pin unit-signing.pub.pem"
            )
        else:
            report["action"] = "give this answer to the CSU operators"
        return 2, report
    report["result"] = "ok"
    report["csu_holds"] = json.loads(body).get("cameras", {})
    return 0, report


def _check(args: argparse.Namespace) -> int:
    code, report = check(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return code
    print(f"CSU          {report['csu']} (certificate name {report['server_name']})")
    unit_cert = report["unit_certificate"]
    if "error" in unit_cert:
        print(f"unit cert    {unit_cert['path']}: {unit_cert['error']}")
    else:
        print(f"unit cert    {unit_cert['subject']}, valid until {unit_cert['not_after']}")
    if "tls" in report:
        print(f"TLS          {report['tls']['version']} {report['tls']['cipher']}")
    print(f"result       {report['result']}")
    if "action" in report:
        print(f"next step    {report['action']}")
    for cam, held in report.get("csu_holds", {}).items():
        gaps = f", gaps {held['gaps']}" if held.get("gaps") else ""
        print(f"CSU holds    {cam}: #{held['first']}..#{held['last']} ({held['count']}){gaps}")
    return code

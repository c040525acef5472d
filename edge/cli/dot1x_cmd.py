"""``edgectl dot1x render-config`` and ``edgectl dot1x status``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.uplink.dot1x import WpaCtrl
from edge.uplink.dot1x.port_state import parse_status, state_from_status

from .. import config as config_mod
from ..clihelp import add_command
from ..errors import Dot1xError
from ..uplink.dot1x import supplicant_conf
from .common import add_config_args, load_config


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "dot1x",
        help="802.1X: render the supplicant configuration, show the port state",
        description="802.1X port authentication (wired EAP-TLS with the unit's certificate): "
        "write wpa_supplicant's file from the configuration, and show the port state.",
        example=[("edgectl dot1x status", "is the switch port open?")],
    )
    dsub = parser.add_subparsers(dest="dot1x_command", required=True, metavar="ACTION")
    render = add_command(
        dsub,
        "render-config",
        help="write wpa_supplicant's wired EAP-TLS file from the configuration",
        description=(
            "Prints the file, or writes it (mode 0600, atomically) with --output; prints "
            "'changed' or 'unchanged' so provisioning stays idempotent."
        ),
        example=[
            ("edgectl dot1x render-config", "print the file"),
            ("edgectl dot1x render-config --output", "write it where wpa_supplicant reads it"),
        ],
    )
    add_config_args(render)
    render.add_argument(
        "--output",
        type=Path,
        nargs="?",
        const=Path("-default-"),
        help="file to write (without a value: dot1x.supplicant_conf or Debian's default path)",
    )
    render.set_defaults(func=_render)
    status = add_command(
        dsub,
        "status",
        help="ask wpa_supplicant once for the port state",
        description="Ask wpa_supplicant once for the port state and show it with the client "
        "certificate's expiry. Exit 0 when the port is authenticated, 1 otherwise.",
        example=[
            ("edgectl dot1x status", "the CSU link waits for 'authenticated'"),
            ("edgectl dot1x status --json", "one JSON object, for scripts"),
        ],
    )
    add_config_args(status)
    status.add_argument("--json", action="store_true", help="print one JSON object, for scripts")
    status.set_defaults(func=_status)


def _render(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    s = supplicant_conf.settings(cfg)
    if args.config is not None:
        origin = str(args.config)
    else:
        origin = (
            "the embedded demo configuration" if args.demo else str(config_mod.DEFAULT_CONFIG_PATH)
        )
    if not cfg.dot1x.enabled:
        print("edgectl: note: dot1x.enabled is false in this configuration", file=sys.stderr)
    text = supplicant_conf.render(s, origin=origin)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    path = s.supplicant_conf if args.output == Path("-default-") else args.output
    changed = supplicant_conf.write(path, text)
    print(f"{path}: {'changed' if changed else 'unchanged'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    s = supplicant_conf.settings(cfg)
    out: dict[str, Any] = {"enabled": cfg.dot1x.enabled, "interface": s.interface}
    try:
        with WpaCtrl(s.ctrl_socket, timeout_s=cfg.dot1x.reply_timeout_s) as ctrl:
            status = parse_status(ctrl.request("STATUS"))
        state, reason = state_from_status(status)
        out.update(state=state.value, reason=reason, supplicant=status)
    except Dot1xError as exc:
        out.update(state="failed", reason=str(exc))
    from edge.identity import read_certificate_status

    out["client_certificate"] = read_certificate_status(
        s.client_cert, warning_days=cfg.dot1x.expiry_warning_days, ca_path=s.server_ca
    )
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(format_port_status(out))
    return 0 if out["state"] == "authenticated" else 1


def format_port_status(out: dict[str, Any]) -> str:
    """``dot1x status`` for people: the port state, why, and the client certificate."""
    enabled = "" if out.get("enabled") else " (dot1x.enabled is false in this configuration)"
    lines = [f"802.1X on {out.get('interface')}: {out.get('state')}{enabled}"]
    if out.get("reason"):
        lines.append(f"  {out['reason']}")
    cert = out.get("client_certificate") or {}
    if cert.get("present"):
        lines.append(
            f"client certificate {cert.get('subject')}: valid until {cert.get('not_after')} "
            f"({cert.get('days_left', 0):.0f} days left)"
        )
    if cert.get("warning"):
        lines.append(f"  ! {cert['warning']}")
    return "\n".join(lines)

"""``edgectl selftest``: active checks run by edged, each with a time limit (exit 0 or 2)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from edge.app import control

from ..clihelp import add_command
from .common import add_config_args, load_config


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "selftest",
        help="active checks: frame, encoder, storage, vault, CSU",
        description="Active checks, each with a time limit: a frame from every camera, the "
        "encoder, writing to storage, the vault's keys and chain, the link to the CSU. edged "
        "must be running. Exit 0 when every check passes or is skipped, 2 when one fails or "
        "runs out of time.",
        example=[
            ("edgectl selftest", "at the end of an installation or a visit"),
            ("edgectl selftest --json", "for scripts"),
        ],
    )
    add_config_args(parser)
    parser.add_argument("--json", action="store_true", help="print the checks as a JSON list")
    parser.set_defaults(func=_selftest)


def _selftest(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    try:
        result = control.call(cfg.control.socket, "selftest", timeout=120.0)
    except control.ControlError as exc:
        if not exc.not_running:
            raise
        raise control.ControlError(
            f"{exc}: start it (systemctl start edged); journalctl -u edged -e says why it stopped",
            not_running=True,
        ) from None
    checks = result["checks"]
    if args.json:
        print(json.dumps(checks, indent=2))
    else:
        for check in checks:
            mark = {"passed": "PASS", "failed": "FAIL", "timeout": "TIME", "skipped": "SKIP"}[
                check["outcome"]
            ]
            print(f"[{mark}] {check['name']:<20} {check['detail']} ({check['seconds']:.1f} s)")
    failed = [c for c in checks if c["outcome"] in ("failed", "timeout")]
    passed = [c for c in checks if c["outcome"] == "passed"]
    if not args.json:
        print(
            f"{len(passed)} passed, {len(failed)} failed, "
            f"{len(checks) - len(passed) - len(failed)} skipped"
        )
    return 2 if failed else 0

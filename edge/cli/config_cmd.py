"""``edgectl config check FILE`` and ``edgectl config show``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import config as config_mod
from ..clihelp import add_command
from ..errors import ConfigError
from .common import add_config_args, load_config
from .entry import describe_os_error


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "config",
        help="check or show the configuration",
        description="Check a configuration file before it is used, or show the configuration "
        "in effect with every default filled in.",
        example=[
            ("edgectl config check /etc/edge/edge.toml", "every problem, with its line"),
            ("edgectl config show", "the effective configuration as JSON"),
        ],
    )
    csub = parser.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = add_command(
        csub,
        "check",
        help="validate a configuration file without starting anything",
        description="Validate a configuration file as edged would read it, without starting "
        "anything: every problem is printed with its place in the file. Exit 0 when the file "
        "is usable, 1 when it has problems, 2 when it cannot be read.",
        example=[
            ("edgectl config check /etc/edge/edge.toml", "before `systemctl reload edged`"),
            ("edgectl config check new.toml && cp new.toml /etc/edge/edge.toml", "check first"),
        ],
    )
    check.add_argument("file", type=Path, help="the configuration file (TOML) to check")
    check.add_argument(
        "--away",
        action="store_true",
        help="checked away from the unit: skip its files and data directory",
    )
    check.set_defaults(func=_check)
    show = add_command(
        csub,
        "show",
        help="print the effective configuration as JSON",
        description="Print the configuration in effect as JSON, with every default filled in "
        "and the file it came from (`origin`).",
        example=[
            ("edgectl config show", "the configuration edgectl reads"),
            ("edgectl config show --config new.toml", "what edged would run with new.toml"),
        ],
    )
    show.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default /etc/edge/edge.toml)",
    )
    show.add_argument("--demo", action="store_true", help="show the embedded demo configuration")
    show.set_defaults(func=_show)
    apply = add_command(
        csub,
        "apply",
        help="apply a configuration document signed by the city",
        description="Hand edged a configuration document signed by the city (edge-csu config "
        "sign), as the CSU does over the uplink: it checks the signer against the city's CA, "
        "the scope (this unit or one of its groups) and the version (above the last one "
        "applied), then applies it like a reload. Refused, nothing changes and the reason is "
        "printed; either way it is written to the signed audit log. Needs the installer role.",
        example=[
            ("edgectl config apply /media/usb/cam-nord-0042.json", "a document on a USB key"),
        ],
    )
    add_config_args(apply)
    apply.add_argument("document", type=Path, help="the signed document (JSON)")
    apply.set_defaults(func=_apply)


def _check(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"edgectl: cannot read {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"edgectl: {path}: not UTF-8 text: give the TOML configuration file", file=sys.stderr)
        return 2
    problems = config_mod.all_problems(text, path=str(path))
    if not problems:
        # Beyond the schema, what edged checks at start, by the function edged calls; with
        # the unit's own file laid over this one when the data directory has it.
        try:
            cfg, origin = config_mod.load(path)
        except ConfigError as exc:  # the per-unit file's problem, naming that file
            problems = [exc]
        else:
            layered = origin != str(path)  # lines would be looked up in the wrong file
            problems = config_mod.startup_problems(
                cfg, path=origin, text=None if layered else text, away=args.away
            )
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    if args.away:
        print(f"{path}: OK away from the unit (its files and data directory are checked there)")
        return 0
    print(f"{path}: OK")
    return 0


def _show(args: argparse.Namespace) -> int:
    cfg, origin = config_mod.load(args.config, demo=args.demo)
    doc = {
        "origin": origin,
        "provisioned": config_mod.is_provisioned(cfg),
        "config": cfg.model_dump(mode="json"),
    }
    print(json.dumps(doc, indent=2, ensure_ascii=False))  # read by people: accents as written
    return 0


def _apply(args: argparse.Namespace) -> int:
    from edge.app import control

    cfg = load_config(args)
    try:
        text = args.document.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"edgectl: cannot read {args.document}: {exc}", file=sys.stderr)
        return 2
    result = control.call(cfg.control.socket, "apply-config", {"envelope": text}, timeout=60.0)
    if not result.get("applied"):
        print(f"{args.document}: {result.get('reason')}; nothing to do")
        return 0
    print(
        f"{args.document}: {result['scope']} version {result['version']} signed by "
        f"{result['signer']} applied\n  configuration {result['old_digest'][:16]}… → "
        f"{result['new_digest'][:16]}…"
    )
    return 0

"""``edgectl config check FILE`` and ``edgectl config show``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import config as config_mod
from .entry import describe_os_error


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "config", help="check or show the configuration"
    )
    csub = parser.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = csub.add_parser("check", help="validate a configuration file without starting anything")
    check.add_argument("file", type=Path)
    check.add_argument(
        "--away",
        action="store_true",
        help="checked away from the unit: skip its files and data directory",
    )
    check.set_defaults(func=_check)
    show = csub.add_parser("show", help="print the effective configuration as JSON")
    show.add_argument("--config", type=Path, default=None)
    show.add_argument("--demo", action="store_true", help="show the embedded demo configuration")
    show.set_defaults(func=_show)


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
        # Beyond the schema, what edged checks at start, by the function edged calls.
        cfg, _origin = config_mod.load(path)
        problems = config_mod.startup_problems(cfg, path=str(path), text=text, away=args.away)
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
    print(json.dumps({"origin": origin, "config": cfg.model_dump(mode="json")}, indent=2))
    return 0

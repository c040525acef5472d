"""``edge-csu``: the supervision-centre side (keys, evidence bundles, receiver, small CA).

Sub-commands live in modules under :mod:`edge.csu` exposing ``register(subparsers)``, like
``edgectl``'s.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import EdgeError

#: Sub-command modules, in the order ``edge-csu --help`` lists them.
COMMAND_MODULES: list[str] = ["vault_cmd", "serve_cmd", "ca_cmd", "token_cmd", "bench_cmd"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-csu", description="Supervision-centre tools for edge units."
    )
    parser.add_argument("--version", action="version", version=f"edge-csu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except EdgeError as exc:
        print(f"edge-csu: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

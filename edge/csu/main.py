"""``edge-csu``: the supervision-centre side (keys, evidence bundles, receiver, small CA).

Sub-commands live in modules under :mod:`edge.csu` exposing ``register(subparsers)``, like
``edgectl``'s.
"""

from __future__ import annotations

# Only what Ctrl-C cannot interrupt into a traceback before main() takes over: the rest
# (argparse, every sub-command) is imported inside main()'s handlers (edge.cli.entry).
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

#: Sub-command modules, in the order ``edge-csu --help`` lists them.
COMMAND_MODULES: list[str] = [
    "vault_cmd",
    "verify_cmd",
    "serve_cmd",
    "ca_cmd",
    "config_cmd",
    "fleet_cmd",
    "token_cmd",
    "console.operator_cmd",
    "command_cmd",
    "retention_cmd",
    "audit_cmd",
    "bench_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    import argparse
    import importlib

    from .. import __version__
    from ..clihelp import HelpFormatter, examples

    parser = argparse.ArgumentParser(
        prog="edge-csu",
        description="Supervision-centre tools for edge units: recipient keys, opening evidence "
        "bundles, the receiver, a small video CA and operator tokens. `edge-csu COMMAND --help` "
        "explains each command; `man edge-csu` has them all.",
        epilog=examples(
            ("edge-csu serve --config csu.toml", "receive recordings from the units"),
            (
                "edge-csu open /media/usb/pv42 --key csu.key.json --ca city-root.pem --out a.mp4",
                "verify an evidence bundle and write a playable MP4",
            ),
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edge-csu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from ..cli.entry import run
    except KeyboardInterrupt:
        print("\nedge-csu: interrupted", file=sys.stderr)
        return 130
    return run("edge-csu", build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())

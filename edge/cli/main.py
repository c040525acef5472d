"""``edgectl``: the on-box command line for installers and maintenance staff.

Each sub-command lives in its own module under :mod:`edge.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning the process exit code.
"""

from __future__ import annotations

# Only what Ctrl-C cannot interrupt into a traceback before main() takes over: the rest
# (argparse, every sub-command) is imported inside main()'s handlers (edge.cli.entry).
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

#: Sub-command modules, in the order ``edgectl --help`` lists them.
COMMAND_MODULES = [
    "config_cmd",
    "status",
    "selftest_cmd",
    "camera_cmd",
    "mask",
    "vault_cmd",
    "enroll",
    "dot1x_cmd",
    "uplink_cmd",
    "analytics_cmd",
    "bench",
]


def build_parser() -> argparse.ArgumentParser:
    import argparse
    import importlib

    from .. import __version__
    from ..clihelp import HelpFormatter, examples

    parser = argparse.ArgumentParser(
        prog="edgectl",
        description="Diagnose, enrol and maintain a video-protection edge unit. "
        "`edgectl COMMAND --help` explains each command; `man edgectl` has them all.",
        epilog=examples(
            ("edgectl status --watch", "the health screen, redrawn while aiming a camera"),
            ("edgectl diag", "every problem with its cause and the next step"),
            ("edgectl config check /etc/edge/edge.toml", "check a configuration before using it"),
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgectl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from .entry import run
    except KeyboardInterrupt:
        print("\nedgectl: interrupted", file=sys.stderr)
        return 130
    return run("edgectl", build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())

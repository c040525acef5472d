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

#: Every sub-command: name -> (module under edge.cli, one-line help), in the order ``edgectl
#: --help`` lists them. A run imports only the module of the command it runs, so ``edgectl
#: --version`` and ``edgectl status`` do not pay for the encoder, the vault or analytics; the help
#: lines are here so the list shows without importing anything (a test keeps them equal to the
#: modules' own).
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("config_cmd", "check or show the configuration"),
    "status": ("status", "one-screen health summary (exit 0/1/2)"),
    "diag": ("status", "every problem with its likely cause and next step"),
    "logs": ("status", "recent journal entries of edged"),
    "selftest": ("selftest_cmd", "active checks: frame, encoder, storage, vault, CSU"),
    "camera": ("camera_cmd", "check a camera: frame rate, gaps, errors (never a picture)"),
    "mask": ("mask", "privacy masks: masked preview for installers, coverage summary"),
    "verify": (
        "vault_cmd",
        "check signatures and the hash chain of the recordings (no key needed)",
    ),
    "export": ("vault_cmd", "write an evidence bundle of a time range"),
    "audit": ("vault_cmd", "print and check the audit log"),
    "events": ("events_cmd", "counts and alerts kept on the unit (signed; table or JSON)"),
    "provision": ("provision_cmd", "give a freshly flashed unit its identity and cameras"),
    "update": ("update_cmd", "install a signed update bundle into the other root slot, confirm it"),
    "enroll": (
        "enroll",
        "create the unit's keys and certificate request, or install the signed certificate",
    ),
    "dot1x": ("dot1x_cmd", "802.1X: render the supplicant configuration, show the port state"),
    "uplink": ("uplink_cmd", "check the link to the CSU"),
    "analytics": (
        "analytics_cmd",
        "check the model, verify events, draw the rules, calibrate, evaluate on a clip",
    ),
    "bench": ("bench", "measure throughput and ratios against baselines (JSON with --json)"),
}

#: Sub-command modules, in the order ``edgectl --help`` lists them.
COMMAND_MODULES = list(dict.fromkeys(module for module, _help in COMMANDS.values()))


def command_in(argv: Sequence[str]) -> str:
    """The sub-command ``argv`` asks for ("" for none: ``--version``, ``--help``, nothing).

    edgectl's own options take no value, so the first word that is not an option is it."""
    return next((word for word in argv if not word.startswith("-")), "")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """edgectl's parser. ``command`` None: every sub-command's full parser (man pages,
    completion, the help tests); otherwise only that command's module is imported and the
    others are one-line entries of the list, enough for ``--help`` and for a wrong name."""
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
    chosen = None if command is None else COMMANDS.get(command, ("", ""))[0]
    for module in COMMAND_MODULES:
        if chosen is None or module == chosen:
            importlib.import_module(f"{__package__}.{module}").register(sub)
        else:
            for name, (owner, help_line) in COMMANDS.items():
                if owner == module:
                    sub.add_parser(name, help=help_line)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from .entry import run
    except KeyboardInterrupt:
        print("\nedgectl: interrupted", file=sys.stderr)
        return 130
    words = sys.argv[1:] if argv is None else argv
    return run("edgectl", lambda: build_parser(command_in(words)), argv)


if __name__ == "__main__":
    sys.exit(main())

"""Arguments shared by several ``edgectl`` sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import config as config_mod


def add_config_args(parser: argparse.ArgumentParser, *, data_dir: bool = True) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default /etc/edge/edge.toml, else the embedded demo default)",
    )
    if data_dir:
        parser.add_argument(
            "--data-dir", type=Path, default=None, help="data directory (overrides unit.data_dir)"
        )


def load_config(args: argparse.Namespace) -> config_mod.EdgeConfig:
    """The configuration named by ``--config`` with ``--data-dir`` applied."""
    cfg, _origin = config_mod.load(args.config)
    data_dir: Path | None = getattr(args, "data_dir", None)
    if data_dir is not None:
        cfg = config_mod.with_data_dir(cfg, data_dir)
    return cfg


class HelpFormatter(argparse.HelpFormatter):
    """argparse's own layout, except that the examples epilog keeps its lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXAMPLES_HEADING):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


#: The first line of every examples epilog; the man-page generator looks for it.
EXAMPLES_HEADING = "examples:"


def examples(*pairs: tuple[str, str]) -> str:
    """An examples epilog: each command line with what it does under it."""
    lines = [EXAMPLES_HEADING]
    for command, what in pairs:
        lines.append(f"  {command}")
        lines.append(f"      {what}")
    return "\n".join(lines)


def add_command(
    sub: Any, name: str, *, help: str, description: str, example: list[tuple[str, str]]
) -> argparse.ArgumentParser:
    """A sub-command parser with its one-line ``help`` (in the parent's list), a ``description``
    for its own page and at least one example, so that ``--help`` and the man pages explain
    every command the same way."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=examples(*example),
        formatter_class=HelpFormatter,
    )
    return parser

"""Arguments shared by several ``edgectl`` sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config as config_mod


def add_config_args(parser: argparse.ArgumentParser, *, data_dir: bool = True) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default /etc/edge/edge.toml)",
    )
    parser.add_argument(
        "--demo", action="store_true", help="use the embedded demo configuration instead"
    )
    if data_dir:
        parser.add_argument(
            "--data-dir", type=Path, default=None, help="data directory (overrides unit.data_dir)"
        )


def load_config(args: argparse.Namespace) -> config_mod.EdgeConfig:
    """The configuration named by ``--config`` with ``--data-dir`` applied."""
    data_dir: Path | None = getattr(args, "data_dir", None)
    cfg, _origin = config_mod.load(
        args.config, demo=getattr(args, "demo", False), data_dir=data_dir
    )
    if data_dir is not None:
        cfg = config_mod.with_data_dir(cfg, data_dir)
    return cfg

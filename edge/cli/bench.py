"""``edgectl bench NAME [--json]``: measure throughput and ratios on this machine."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
from typing import Any

from .. import __version__
from ..bench import BENCHMARKS


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "bench", help="measure throughput and ratios against baselines (JSON with --json)"
    )
    bsub = parser.add_subparsers(dest="bench_name", required=True, metavar="NAME")
    for name, module in sorted(BENCHMARKS.items()):
        mod = importlib.import_module(f"edge.bench.{module}")
        bparser = bsub.add_parser(name, help=(mod.__doc__ or name).strip().splitlines()[0])
        bparser.add_argument("--json", action="store_true", help="print one JSON object")
        mod.add_arguments(bparser)
        bparser.set_defaults(func=_run, bench_module=mod)


def _run(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {
        "benchmark": args.bench_name,
        "version": __version__,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    result.update(args.bench_module.run(args))
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")
    return 0

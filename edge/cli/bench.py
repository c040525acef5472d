"""``edgectl bench NAME [--json]``: measure throughput and ratios on this machine."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from typing import Any

from .. import __version__
from ..bench import BENCHMARKS
from ..bench.machine import describe
from ..clihelp import add_command


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "bench",
        help="measure throughput and ratios against baselines (JSON with --json)",
        description="Benchmarks of the recording path on this machine. Each measures a ratio "
        "against a baseline run in the same process (memcpy, the FFmpeg CLI, a raw sink), so "
        "results compare across machines.",
        example=[
            ("edgectl bench mask --json", "4K masking time against one memcpy of the frame"),
            ("edgectl bench pipeline", "the whole recording path against the FFmpeg CLI"),
        ],
    )
    bsub = parser.add_subparsers(dest="bench_name", required=True, metavar="NAME")
    for name, module in sorted(BENCHMARKS.items()):
        mod = importlib.import_module(f"edge.bench.{module}")
        doc = (mod.__doc__ or name).strip()
        bparser = add_command(
            bsub,
            name,
            help=doc.splitlines()[0],
            # The module's first paragraph says what is measured against what.
            description=doc.split("\n\n", 1)[0].replace("``", ""),
            example=[
                (f"edgectl bench {name}", "measure and print the ratios"),
                (f"edgectl bench {name} --json", "one JSON object, for scripts and CI"),
            ],
        )
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
    result.update(describe())  # the figures mean little without the machine and its load
    result.update(args.bench_module.run(args))
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")
    return 0

"""Command start-up: wall time of ``edgectl --version`` and ``edgectl status`` against ``python
-c pass``, each a fresh process, so the figures are what a technician waits for.

Each repetition runs the baseline and both commands once, interleaved so all three see the same
machine state; medians are reported, and the time each command adds to a bare interpreter
(``*_over_baseline_s``). ``edgectl status`` runs for real (configuration, control socket, the
machine's figures): with no edged listening it reports that and exits 2, which is still a full
start. The target is 0.3 s for each command (``within_target``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from ..errors import EdgeError

#: What a technician should wait at most for either command, on the unit.
TARGET_S = 0.3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=int, default=7, help="runs of each command (default 7)")
    parser.add_argument(
        "--config",
        default=None,
        help="configuration `edgectl status` reads (default: the embedded demo one)",
    )


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    elapsed = time.perf_counter() - start
    # 0/1/2 are status verdicts; anything else (a usage error, a traceback) is not a start-up.
    if done.returncode not in (0, 1, 2) or "Traceback" in done.stderr:
        raise EdgeError(f"{' '.join(argv[1:])} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def run(args: argparse.Namespace) -> dict[str, Any]:
    repeat: int = max(3, args.repeat)
    edgectl = [sys.executable, "-m", "edge.cli.main"]
    with tempfile.TemporaryDirectory(prefix="edge-bench-startup-") as data_dir:
        where = ["--config", args.config] if args.config else ["--demo", "--data-dir", data_dir]
        commands = {
            "baseline": [sys.executable, "-c", "pass"],
            "version": [*edgectl, "--version"],
            "status": [*edgectl, "status", "--json", *where],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeat):
            for name, argv in commands.items():
                times[name].append(_timed(argv))
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["baseline"]
    return {
        "repeat": repeat,
        "baseline_s": round(base, 4),
        "version_s": round(medians["version"], 4),
        "status_s": round(medians["status"], 4),
        "version_over_baseline_s": round(medians["version"] - base, 4),
        "status_over_baseline_s": round(medians["status"] - base, 4),
        "target_s": TARGET_S,
        "within_target": medians["version"] < TARGET_S and medians["status"] < TARGET_S,
    }

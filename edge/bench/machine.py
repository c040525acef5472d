"""The machine a benchmark ran on: CPU model, cores, memory, Raspberry Pi model, load.

Every ``edgectl bench`` result carries these (:func:`describe`), so figures from a Pi 4, a
Pi 5 and a development PC are never mistaken for one another, and a figure taken on a busy
machine says so (the load averages at the start of the run).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

#: Where the firmware of a Raspberry Pi (and other device-tree boards) names the board.
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def cpu_model(cpuinfo: str) -> str:
    """The CPU's name from ``/proc/cpuinfo`` text: x86 ``model name``, else the ARM board's
    ``Model`` or ``Hardware`` line, else the architecture."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if fields.get(key):
            return fields[key]
    return platform.machine()


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:
        return None


def describe() -> dict[str, Any]:
    cpuinfo = _read(Path("/proc/cpuinfo")) or ""
    meminfo = _read(Path("/proc/meminfo")) or ""
    ram_kib = 0
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            ram_kib = int(line.split()[1])
    model = _read(DEVICE_TREE_MODEL)
    load = os.getloadavg()
    return {
        "cpu_model": cpu_model(cpuinfo),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)),
        "ram_mib": ram_kib // 1024,
        "pi_model": None if model is None else model.strip("\x00 \n"),
        "load_average_at_start": [round(x, 2) for x in load],
    }

"""Which root slot runs, and what the last update did: what a unit reports to the fleet view.

The disk holds two root slots (``image/layout.py``); the boot loader names the one it booted on
the kernel command line, either as RAUC's ``rauc.slot=A`` or through the root it mounts
(``root=LABEL=edge-root-b``, or on the Raspberry Pi ``root=PARTUUID=<disk>-02|03``). The last
update's outcome (``edgectl update``) is kept on the data partition, which every slot sees.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

LAST_UPDATE_NAME = "last-update.json"
_RAUC = re.compile(r"(?:^|\s)rauc\.slot=(\S+)")
_LABEL = re.compile(r"(?:^|\s)root=LABEL=edge-root-([ab])(?:\s|$)")
_PARTUUID = re.compile(r"(?:^|\s)root=PARTUUID=[0-9a-fA-F]+-0([23])(?:\s|$)")


def running_slot(cmdline: str) -> str | None:
    """``"A"`` or ``"B"`` from a kernel command line; None when it names no slot (a
    development machine, a container)."""
    found = _RAUC.search(cmdline)
    if found:
        name = found.group(1).rsplit(".", 1)[-1].upper()  # "A", or RAUC's "rootfs.0" form
        return {"0": "A", "1": "B"}.get(name, name)
    found = _LABEL.search(cmdline)
    if found:
        return found.group(1).upper()
    found = _PARTUUID.search(cmdline)
    if found:
        return "A" if found.group(1) == "2" else "B"
    return None


def read_running_slot(path: Path = Path("/proc/cmdline")) -> str | None:
    try:
        return running_slot(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def update_dir_of(data_dir: Path) -> Path:
    return data_dir / "update"


def last_update(data_dir: Path) -> dict[str, Any] | None:
    """The last update's outcome as ``edgectl update`` recorded it, or None."""
    try:
        value = json.loads((update_dir_of(data_dir) / LAST_UPDATE_NAME).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None

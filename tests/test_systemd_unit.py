"""The shipped unit file as systemd itself judges it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .conftest import REPO, tool

UNIT = REPO / "edge" / "data" / "edged.service"


def test_unit_exposure_at_most_2(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    unit = tmp_path / "edged.service"
    shutil.copy(UNIT, unit)
    out = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for edged\.service: (\d+\.\d+)", out.stdout)
    assert match, out.stdout + out.stderr
    assert float(match.group(1)) <= 2.0, out.stdout


def test_unit_is_notify_with_watchdog() -> None:
    text = UNIT.read_text()
    assert "Type=notify" in text
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert "ReadWritePaths=/var/lib/edge" in text
    assert "NoNewPrivileges=yes" in text

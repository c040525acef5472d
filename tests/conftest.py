"""Shared test helpers: paths, tool look-ups, root detection."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IS_ROOT = os.geteuid() == 0


def tool(name: str) -> str:
    """Absolute path of a command-line tool the test needs; skip clearly when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (tools/setup.sh installs it)")
    return path


def require_root() -> None:
    if not IS_ROOT:
        pytest.skip("needs root (network namespaces, loop devices, nftables)")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "edge-data"
    path.mkdir()
    return path

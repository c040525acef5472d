"""Acceptance tests that run on a real unit (Raspberry Pi with camera, encoder, GPIO, switch port).

Run on the unit with ``/opt/edge/venv/bin/python -m pytest hw-tests``. Every test checks for the
hardware it needs and skips with the reason when it is absent, so the suite is safe to run
anywhere; each has a time limit of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def is_raspberry_pi() -> bool:
    try:
        model = Path("/proc/device-tree/model").read_text(errors="replace")
    except OSError:
        return False
    return "Raspberry Pi" in model


@pytest.fixture
def raspberry_pi() -> None:
    if not is_raspberry_pi():
        pytest.skip("not a Raspberry Pi (/proc/device-tree/model does not say so)")

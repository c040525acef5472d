"""Health inputs on a real unit: SoC temperature, throttling flags, the cabinet door switch, and
edged's own view of them through ``edgectl status``.

The door test needs the unit's configuration (``/etc/edge/edge.toml`` or ``EDGE_CONFIG``) with
``control.door`` set; it asks the installer to open and close the door within the time limit.
Every test skips with the reason where the hardware is absent.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from edge import config
from edge.health import system
from edge.health.door import DoorMonitor

DOOR_TIMEOUT_S = 60.0


def test_soc_temperature_readable(raspberry_pi: None) -> None:
    zones = system.thermal_zones()
    assert zones, "no thermal zone under /sys/class/thermal"
    soc = max(z.celsius for z in zones)
    assert 0.0 < soc < 100.0, f"implausible SoC temperature {soc} °C"


def test_throttling_flags_readable(raspberry_pi: None) -> None:
    flags = system.throttling()
    if flags is None:
        pytest.skip("firmware does not expose get_throttled on this kernel")
    assert "under-voltage now" not in flags, "the unit is under-powered now: check the supply"


def _door_spec() -> str:
    path = Path(os.environ.get("EDGE_CONFIG", str(config.DEFAULT_CONFIG_PATH)))
    if not path.exists():
        pytest.skip(f"no unit configuration at {path} (set EDGE_CONFIG)")
    cfg, _ = config.load(path)
    if not cfg.control.door:
        pytest.skip("control.door is not set: no door switch wired on this unit")
    return cfg.control.door


def test_door_switch_line_readable_and_changes() -> None:
    spec = _door_spec()
    changes: list[bool] = []
    monitor = DoorMonitor(spec, changes.append)
    monitor.start()
    try:
        deadline = time.monotonic() + 5.0
        while monitor.logic.open is None and time.monotonic() < deadline:
            assert monitor.error is None, monitor.error
            time.sleep(0.05)
        assert monitor.logic.open is not None, f"no reading from {spec} within 5 s"
        first = monitor.logic.open
        print(
            f"\ndoor is {'open' if first else 'closed'}: "
            f"{'close' if first else 'open'} it, then restore it, within {DOOR_TIMEOUT_S:.0f} s",
            file=sys.stderr,
        )
        deadline = time.monotonic() + DOOR_TIMEOUT_S
        while len(changes) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert changes[1:3] == [not first, first], f"door changes seen: {changes}"
    finally:
        monitor.stop()

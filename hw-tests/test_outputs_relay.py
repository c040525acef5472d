"""A relay on a GPIO line of the real unit: it toggles, and returns to its safe state both from
edged's engine and from the guard process when the driver's holder is gone.

Needs the unit's configuration (``/etc/edge/edge.toml`` or ``EDGE_CONFIG``) with an output of
``kind = "gpio"``; skips with the reason elsewhere. The relay really switches: run it with the
cabinet's outputs disconnected or with the city's agreement.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge import config
from edge.config import OutputConfig, OutputKind
from edge.outputs.gpio import GpioDriver


def _relay() -> OutputConfig:
    path = Path(os.environ.get("EDGE_CONFIG", str(config.DEFAULT_CONFIG_PATH)))
    if not path.exists():
        pytest.skip(f"no unit configuration at {path} (set EDGE_CONFIG)")
    cfg, _ = config.load(path)
    relays = [o for o in cfg.outputs if o.kind is OutputKind.GPIO]
    if not relays:
        pytest.skip("no output of kind gpio in the unit's configuration: no relay wired")
    return relays[0]


def _level(out: OutputConfig) -> int:
    """The line's value as the chip reports it now (requested as-is, not changed)."""
    import gpiod
    from gpiod.line import Direction

    assert out.gpio is not None
    with gpiod.request_lines(
        str(out.gpio.chip),
        consumer="edge-hw-test",
        config={out.gpio.line: gpiod.LineSettings(direction=Direction.AS_IS,
                                                  active_low=out.gpio.active_low)},
    ) as request:  # fmt: skip
        return int(request.get_value(out.gpio.line).value)


def test_edged_may_open_the_relay_chip() -> None:
    """edged runs as user and group edge (edged.service): the image's udev rule gives the GPIO
    chips to that group; as root, the tests below would pass without it."""
    import grp

    out = _relay()
    assert out.gpio is not None
    st = Path(out.gpio.chip).stat()
    assert st.st_gid == grp.getgrnam("edge").gr_gid, f"{out.gpio.chip} is not group edge"
    assert st.st_mode & 0o060 == 0o060, f"{out.gpio.chip} is not read-write for its group"


def test_relay_toggles_and_returns_to_safe() -> None:
    out = _relay()
    state = next(iter(out.states))
    driver = GpioDriver(out)
    try:
        driver.drive(state, 1.0)
        assert driver._request.get_value(out.gpio.line).value == out.states[state]  # type: ignore[union-attr]
        time.sleep(1.0)
        driver.safe()
        assert driver._request.get_value(out.gpio.line).value == out.safe_value  # type: ignore[union-attr]
    finally:
        driver.safe()
        driver.close()


def test_guard_returns_the_relay_to_safe_when_its_holder_is_gone() -> None:
    out = _relay()
    driver = GpioDriver(out)
    driver.drive(next(iter(out.states)), 5.0)
    driver.close()  # what the kernel does when edged dies: the line is released, as it was
    guard = subprocess.Popen(
        [sys.executable, "-m", "edge.outputs.guard"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert guard.stdin is not None and guard.stdout is not None
    guard.stdin.write(b"[" + out.model_dump_json().encode() + b"]\n")
    guard.stdin.flush()
    assert guard.stdout.readline() == b"armed\n"
    guard.stdin.close()
    assert guard.wait(10) == 0
    assert _level(out) == out.safe_value

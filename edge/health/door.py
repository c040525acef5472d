"""The cabinet door switch (ANSSI/CNPP R59: opening the cabinet raises an alarm).

Two wirings are supported, named by ``control.door`` in the configuration:

- ``gpio:/dev/gpiochipN:LINE[:active-low]`` — a switch on a GPIO line, read with libgpiod
  (the ``gpiod`` Python bindings, v2 API) with edge events and a debounce period;
- ``input:/dev/input/…:SW_NAME`` — a switch reported by an input device (a GPIO key driver
  declared in the device tree, or a USB contact), read with python-evdev.

:class:`DoorLogic` is the pure part (debounce, state, what to report); the readers are thin and
are only imported when configured. On a real unit ``hw-tests/test_door.py`` reads the line.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_SPEC = re.compile(
    r"^(?:gpio:(?P<chip>/dev/gpiochip\d+):(?P<line>\d+)(?P<low>:active-low)?"
    r"|input:(?P<dev>/dev/input/.+):(?P<code>[A-Z0-9_]+))\Z"
)


@dataclass(frozen=True)
class DoorSpec:
    kind: str  # "gpio" | "input"
    device: str
    line: int | None
    active_low: bool
    code: str | None


def parse_spec(spec: str) -> DoorSpec:
    m = _SPEC.match(spec)
    if not m:
        raise ValueError(
            f"door switch {spec!r}: expected gpio:/dev/gpiochipN:LINE or input:DEV:SW_…"
        )
    if m.group("chip"):
        return DoorSpec("gpio", m.group("chip"), int(m.group("line")), bool(m.group("low")), None)
    return DoorSpec("input", m.group("dev"), None, False, m.group("code"))


class DoorLogic:
    """Debounced door state from raw switch readings. Pure: time is passed in.

    A change is accepted once the raw level has been stable for ``debounce_s``; each accepted
    change is returned once by :meth:`feed` so the caller raises or clears the alarm.
    """

    def __init__(self, debounce_s: float = 0.2) -> None:
        self.debounce_s = debounce_s
        self.open: bool | None = None
        self.changed_at: float | None = None
        self.openings = 0
        self._pending: tuple[bool, float] | None = None

    def feed(self, raw_open: bool, now: float) -> bool | None:
        """Record a reading; return the new state when it changes, else ``None``."""
        if self.open is None:
            self.open, self.changed_at = raw_open, now
            if raw_open:
                self.openings += 1
            return raw_open
        if raw_open == self.open:
            self._pending = None
            return None
        if self._pending is None or self._pending[0] != raw_open:
            self._pending = (raw_open, now)
            return None
        if now - self._pending[1] < self.debounce_s:
            return None
        self.open, self.changed_at, self._pending = raw_open, now, None
        if raw_open:
            self.openings += 1
        return raw_open

    def snapshot(self) -> dict[str, Any]:
        return {"open": self.open, "changed_at_mono": self.changed_at, "openings": self.openings}


class DoorMonitor:
    """Reads the switch in a thread and calls ``on_change(open)`` for each debounced change.

    Thread: one reader thread owns the device and :attr:`logic`; :meth:`snapshot` may be read
    from any thread (values are replaced whole).
    """

    def __init__(self, spec: str, on_change: Callable[[bool], None], poll_s: float = 0.05) -> None:
        self.spec = parse_spec(spec)
        self.logic = DoorLogic()
        self.on_change = on_change
        self.poll_s = poll_s
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="door", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def snapshot(self) -> dict[str, Any]:
        snap = self.logic.snapshot()
        snap["switch"] = f"{self.spec.kind}:{self.spec.device}"
        snap["error"] = self.error
        return snap

    def _run(self) -> None:
        import time

        try:
            read = self._gpio_reader() if self.spec.kind == "gpio" else self._input_reader()
        except (ImportError, OSError, ValueError) as exc:
            self.error = f"cannot read the door switch: {exc}"
            log.error("%s", self.error)
            return
        while not self._stop.is_set():
            try:
                raw_open = read()
            except OSError as exc:
                self.error = f"door switch read failed: {exc}"
                log.error("%s", self.error)
                self._stop.wait(5.0)
                continue
            change = self.logic.feed(raw_open, time.monotonic())
            if change is not None:
                log.warning("cabinet door %s", "OPENED" if change else "closed")
                self.on_change(change)
            self._stop.wait(self.poll_s)

    def _gpio_reader(self) -> Callable[[], bool]:
        import gpiod
        from gpiod.line import Direction

        assert self.spec.line is not None
        request = gpiod.request_lines(
            self.spec.device,
            consumer="edged-door",
            config={
                self.spec.line: gpiod.LineSettings(
                    direction=Direction.INPUT, active_low=self.spec.active_low
                )
            },
        )
        line = self.spec.line

        def read() -> bool:
            # Active (after the active-low inversion) means the contact is open: door open.
            return bool(request.get_value(line).value)

        return read

    def _input_reader(self) -> Callable[[], bool]:
        import evdev

        device = evdev.InputDevice(self.spec.device)
        code = evdev.ecodes.ecodes[self.spec.code]

        def read() -> bool:
            return code in device.active_keys() or bool(
                code in getattr(device, "switches", lambda: [])()
            )

        return read

"""Relay on a GPIO line (libgpiod v2 bindings): closed (1) or open (0, usually safe).

The line is requested as an output at its safe value, so opening the driver never pulses the
relay. When the process holding the request dies the kernel releases the line and its level
is then the chip's business: the guard process (:mod:`edge.outputs.guard`) requests it again
and drives it safe.
"""

from __future__ import annotations

from typing import Any

from edge.config import GpioOutputConfig, OutputConfig
from edge.errors import OutputError
from edge.outputs.base import OutputDriver


class GpioDriver(OutputDriver):
    def __init__(self, cfg: OutputConfig) -> None:
        super().__init__(cfg)
        assert cfg.gpio is not None
        self.line: GpioOutputConfig = cfg.gpio
        self._request: Any = None

    def _set(self, value: int) -> None:
        import gpiod
        from gpiod.line import Direction, Value

        level = Value.ACTIVE if value else Value.INACTIVE
        try:
            if self._request is None:
                settings = gpiod.LineSettings(
                    direction=Direction.OUTPUT,
                    active_low=self.line.active_low,
                    output_value=Value.ACTIVE if self.cfg.safe_value else Value.INACTIVE,
                )
                self._request = gpiod.request_lines(
                    str(self.line.chip),
                    consumer=f"edge-output-{self.name}",
                    config={self.line.line: settings},
                )
            self._request.set_value(self.line.line, level)
        except OSError as exc:
            raise OutputError(
                f"output {self.name}: {self.line.chip} line {self.line.line}: {exc}"
            ) from None

    def drive(self, state: str, duration_s: float) -> None:
        value = self.cfg.states[state]
        assert isinstance(value, int)
        self._set(value)

    def safe(self) -> None:
        self._set(self.cfg.safe_value)

    def close(self) -> None:
        if self._request is not None:
            self._request.release()
            self._request = None

"""The one interface every cabinet output driver implements, and the factory that picks one.

A driver knows how to put its output in one of the states the city named (``states`` in the
configuration) and back in its safe state. It knows nothing of events, playbooks or commands:
:mod:`edge.outputs.engine` decides, the driver only drives. Drivers are called from the
engine's one thread (and from the guard process, which has its own drivers), never from two
threads at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from edge.config import OutputConfig, OutputKind


class OutputDriver(ABC):
    def __init__(self, cfg: OutputConfig) -> None:
        self.cfg = cfg

    @property
    def name(self) -> str:
        return self.cfg.name

    @abstractmethod
    def drive(self, state: str, duration_s: float) -> None:
        """Put the output in ``state`` (a key of ``cfg.states``) for at most ``duration_s``
        (the engine returns it to safe itself; a driver that can bound the state on its own,
        like audio, does so too). Raises :class:`edge.errors.OutputError`."""

    @abstractmethod
    def safe(self) -> None:
        """Put the output in its safe state. Raises :class:`edge.errors.OutputError`."""

    def heartbeat(self, count: int) -> None:  # noqa: B027 - most outputs have none
        """Tell a controller that watches one that the unit is alive (``count`` increases)."""

    def check(self) -> list[str]:
        """Problems that would make ``drive`` fail (missing message file, too long...)."""
        return []

    def close(self) -> None:  # noqa: B027 - most outputs hold nothing
        """Release the connection or line (the output keeps its last state)."""


def make_driver(cfg: OutputConfig) -> OutputDriver:
    """The driver of ``cfg.kind``; imports its library only when such an output exists."""
    if cfg.kind is OutputKind.MODBUS:
        from edge.outputs.modbus import ModbusDriver

        return ModbusDriver(cfg)
    if cfg.kind is OutputKind.GPIO:
        from edge.outputs.gpio import GpioDriver

        return GpioDriver(cfg)
    from edge.outputs.audio import AudioDriver

    return AudioDriver(cfg)

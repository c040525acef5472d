"""Modbus output: a holding register of the cabinet's PLC or sign controller (pymodbus), over
TCP or over a serial RTU line.

The controller shows what the register says: ``states`` name the values, ``safe_value`` is the
blank sign or open barrier. Where the controller's program watches ``heartbeat_register``, it
falls back to its safe state by itself when the unit stops writing it (power cut, frozen
board): the one safeguard that needs nothing of the unit to be alive.
"""

from __future__ import annotations

import logging

from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.config import ModbusOutputConfig, ModbusTransport, OutputConfig
from edge.errors import OutputError
from edge.outputs.base import OutputDriver

log = logging.getLogger(__name__)


class ModbusDriver(OutputDriver):
    def __init__(self, cfg: OutputConfig) -> None:
        super().__init__(cfg)
        assert cfg.modbus is not None
        self.bus: ModbusOutputConfig = cfg.modbus
        # One attempt per request: the engine decides when to try again, and a safe-state
        # write must not wait behind three retries of a dead controller.
        self._client: ModbusTcpClient | ModbusSerialClient
        if self.bus.transport is ModbusTransport.RTU:
            assert self.bus.serial_port is not None
            self._client = ModbusSerialClient(
                self.bus.serial_port,
                framer=FramerType.RTU,
                baudrate=self.bus.baudrate,
                parity=self.bus.parity,
                stopbits=self.bus.stopbits,
                timeout=self.bus.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
            self._where = self.bus.serial_port
        else:
            assert self.bus.host is not None
            self._client = ModbusTcpClient(
                self.bus.host,
                port=self.bus.port,
                timeout=self.bus.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
            self._where = f"{self.bus.host}:{self.bus.port}"

    def _write(self, register: int, value: int, what: str) -> None:
        try:
            connected = self._client.connected or self._client.connect()
            if not connected:
                raise OutputError(f"output {self.name}: controller {self._where} unreachable")
            reply = self._client.write_register(register, value, device_id=self.bus.device_id)
        except ModbusException as exc:
            self._client.close()  # type: ignore[no-untyped-call]
            raise OutputError(f"output {self.name}: {what} not written: {exc}") from None
        if reply.isError():
            raise OutputError(f"output {self.name}: controller refused {what}: {reply}")

    def drive(self, state: str, duration_s: float) -> None:
        value = self.cfg.states[state]
        assert isinstance(value, int)
        self._write(self.bus.state_register, value, f"state {state} ({value})")

    def safe(self) -> None:
        self._write(self.bus.state_register, self.cfg.safe_value, "safe state")

    def heartbeat(self, count: int) -> None:
        if self.bus.heartbeat_register is not None:
            self._write(self.bus.heartbeat_register, count % 65536, "heartbeat")

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

"""A real Modbus TCP server (pymodbus's own) on loopback, standing in for a sign controller."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.bench.outputs import MODBUS_TCP_SERVER
from tests.conftest import tool

_RTU_SERVER = """
import logging, sys, warnings
warnings.simplefilter("ignore")
logging.getLogger("pymodbus").setLevel(logging.ERROR)
from pymodbus import FramerType
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartSerialServer
device = ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, [0] * 256))
StartSerialServer(context=ModbusServerContext(devices={1: device}, single=False),
                  framer=FramerType.RTU, port=sys.argv[1], baudrate=19200, parity="N")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SignController:
    """Reads the registers of the running server the way a sign controller would see them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client = ModbusTcpClient("127.0.0.1", port=port, timeout=1.0)

    def register(self, address: int) -> int:
        if not self.client.connected:
            self.client.connect()  # type: ignore[no-untyped-call]
        reply = self.client.read_holding_registers(address, count=1, device_id=1)
        assert not reply.isError(), reply
        return int(reply.registers[0])

    def wait_register(self, address: int, value: int, timeout: float) -> float:
        """Poll until the register holds ``value``; the monotonic time it was first seen."""
        deadline = time.monotonic() + timeout
        while True:
            if self.register(address) == value:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"register {address} is {self.register(address)}, not {value}, "
                    f"after {timeout} s"
                )
            time.sleep(0.002)

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]


@contextmanager
def modbus_server(port: int | None = None) -> Iterator[SignController]:
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-c", MODBUS_TCP_SERVER, str(port)])
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("the Modbus server did not start") from None
                time.sleep(0.05)
        controller = SignController(port)
        try:
            yield controller
        finally:
            controller.close()
    finally:
        proc.kill()
        proc.wait()


class RtuController:
    """Reads the registers of the serial server from the controller's side of the line."""

    def __init__(self, port: str) -> None:
        self.client = ModbusSerialClient(port, baudrate=19200, parity="N", timeout=1.0, retries=1)

    def register(self, address: int) -> int:
        # Opened and closed each time: a serial port is locked by whoever holds it open, and
        # the unit's side (driver, guard) must be able to open it between two reads.
        assert self.client.connect()
        try:
            reply = self.client.read_holding_registers(address, count=1, device_id=1)
        finally:
            self.client.close()  # type: ignore[no-untyped-call]
        assert not reply.isError(), reply
        return int(reply.registers[0])


@contextmanager
def rtu_line(tmp: Path) -> Iterator[tuple[str, RtuController]]:
    """An RS-485 line stood in for by a pseudo-terminal pair (socat), the pymodbus RTU server
    (the controller) on its far end; yields the unit's end and a reader on that same end (a
    second master on the bus: the test uses it only while the unit's side is quiet)."""
    socat = tool("socat")
    unit_end, server_end = tmp / "rtu-unit", tmp / "rtu-server"
    pair = subprocess.Popen(
        [socat, "pty,raw,echo=0,link=" + str(unit_end), "pty,raw,echo=0,link=" + str(server_end)],
        stderr=subprocess.DEVNULL,
    )
    procs = [pair]
    try:
        deadline = time.monotonic() + 10
        while not (unit_end.exists() and server_end.exists()):
            assert time.monotonic() < deadline, "socat made no pseudo-terminal pair"
            time.sleep(0.02)
        server = subprocess.Popen([sys.executable, "-c", _RTU_SERVER, str(server_end)])
        procs.append(server)
        # The device itself (/dev/pts/N), as a unit's configuration names a serial device.
        device = str(unit_end.resolve())
        controller = RtuController(device)
        deadline = time.monotonic() + 15
        while True:  # RTU has no connection to wait for: the server answers once it is up
            try:
                controller.register(0)
                break
            except (AssertionError, ModbusException):
                assert server.poll() is None, "the RTU server died"
                assert time.monotonic() < deadline, "the RTU server does not answer"
                time.sleep(0.1)
        yield device, controller
    finally:
        for proc in reversed(procs):
            proc.kill()
            proc.wait()

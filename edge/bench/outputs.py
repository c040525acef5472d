"""Cabinet outputs: delay from a signed event to the sign controller's register, and from the
death of edged (SIGKILL) to the safe state, against one Modbus write-and-read round trip.

A pymodbus TCP server on loopback stands in for the sign controller; the engine, its driver and
the guard process are the real ones. ``event_to_output`` is measured from the event's
publication on the unit's event hub to the register seen changed by a second client;
``kill_to_safe`` from SIGKILL of a process holding the guard (as edged does) to the register
seen back at its safe value. Both include the observer's polling (about 1 ms); the baseline
``roundtrip`` is one write then one read by that same client.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from ..errors import EdgeError

#: pymodbus's own Modbus TCP server on loopback (``python -c MODBUS_TCP_SERVER PORT``), standing
#: in for a sign controller: 256 holding registers of device 1. The tests use it too.
MODBUS_TCP_SERVER = """
import logging, sys, warnings
# The 3.x data store API announces its 4.0 successor at every start.
warnings.simplefilter("ignore")
logging.getLogger("pymodbus").setLevel(logging.ERROR)
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartTcpServer
# The block starts at 1: the server adds one to each address on the wire (protocol address 0).
device = ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, [0] * 256))
StartTcpServer(context=ModbusServerContext(devices={1: device}, single=False),
               address=("127.0.0.1", int(sys.argv[1])))
"""

#: Stands in for edged: holds the guard's pipe, says when the guard is armed, then waits to die.
_HOLDER = """
import subprocess, sys, time
guard = subprocess.Popen([sys.executable, "-m", "edge.outputs.guard"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, start_new_session=True)
guard.stdin.write(sys.argv[1].encode() + b"\\n")
guard.stdin.flush()
sys.stdout.write(guard.stdout.readline().decode())
sys.stdout.flush()
time.sleep(3600)
"""

REGISTER = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=int, default=10, help="measurements of each (default 10)")


@contextlib.contextmanager
def _controller() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen([sys.executable, "-c", MODBUS_TCP_SERVER, str(port)])
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise EdgeError("the Modbus test server did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait()


def _config(port: int) -> Any:
    from edge import config

    return config.parse(f"""
[[outputs]]
name = "sign"
meaning = "bench sign"
kind = "modbus"
states = {{ on = 1 }}
[outputs.modbus]
host = "127.0.0.1"
port = {port}
state_register = {REGISTER}

[[playbooks]]
name = "bench"
event = "bench"
output = "sign"
state = "on"
duration_s = 0.05
confirmation = "immediate"
""")  # fmt: skip


def _wait(client: Any, value: int, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        reply = client.read_holding_registers(REGISTER, count=1, device_id=1)
        now = time.monotonic()
        if not reply.isError() and reply.registers[0] == value:
            return now
        if now > deadline:
            raise EdgeError(f"register {REGISTER} did not become {value} in {timeout} s")
        time.sleep(0.001)


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "max": round(max(values), 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    repeat = max(3, args.repeat)
    # Every action is logged at WARNING in edged; here they would bury the figures. The level
    # is given back afterwards: the bench may run inside a longer-lived process.
    edge_log = logging.getLogger("edge")
    level = edge_log.level
    edge_log.setLevel(logging.ERROR)
    try:
        return _run(args, repeat)
    finally:
        edge_log.setLevel(level)


def _run(args: argparse.Namespace, repeat: int) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from pymodbus.client import ModbusTcpClient

    from edge.app.alerts import AlertHub
    from edge.events import EventSigner
    from edge.outputs.engine import OutputEngine

    with _controller() as port:
        cfg = _config(port)
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2.0)
        client.connect()  # type: ignore[no-untyped-call]
        roundtrip = []
        for i in range(repeat):
            t0 = time.monotonic()
            client.write_register(REGISTER + 1, i, device_id=1)
            client.read_holding_registers(REGISTER + 1, count=1, device_id=1)
            roundtrip.append((time.monotonic() - t0) * 1000)

        events = []
        engine = OutputEngine(cfg, lambda *_: None, guard=False, keep_pending=False)
        hub = AlertHub(EventSigner(ed25519.Ed25519PrivateKey.generate(), "bench-unit"))
        hub.add_listener(engine.on_event)
        engine.start()
        try:
            for _ in range(repeat):
                _wait(client, 0)
                t0 = time.monotonic()
                hub.notice("alert", "bench", "bench", {"message": "bench"})
                events.append((_wait(client, 1) - t0) * 1000)
        finally:
            engine.stop()

        crashes = []
        payload = "[" + cfg.outputs[0].model_dump_json() + "]"
        for _ in range(repeat):
            holder = subprocess.Popen(
                [sys.executable, "-c", _HOLDER, payload],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # the guard's log lines, one pair per repeat
            )
            assert holder.stdout is not None
            if holder.stdout.readline().strip() != b"armed":
                holder.kill()
                raise EdgeError("the output guard did not arm")
            client.write_register(REGISTER, 1, device_id=1)
            _wait(client, 1)
            t0 = time.monotonic()
            holder.send_signal(signal.SIGKILL)
            crashes.append((_wait(client, 0) - t0) * 1000)
            holder.wait()
        client.close()  # type: ignore[no-untyped-call]
    base = statistics.median(roundtrip)
    return {
        "repeat": repeat,
        "roundtrip_ms": _summary(roundtrip),
        "event_to_output_ms": _summary(events),
        "kill_to_safe_ms": _summary(crashes),
        "event_vs_roundtrip": round(statistics.median(events) / base, 2),
        "kill_to_safe_vs_roundtrip": round(statistics.median(crashes) / base, 2),
    }

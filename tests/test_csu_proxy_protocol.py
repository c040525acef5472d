"""Behind HAProxy (the shipped configuration: ``send-proxy-v2``) the receiver counts and logs
each unit by its own address, read from the PROXY protocol v2 header, not by the proxy's: one
unit's connections cannot use up the fleet's allowance, and ``edge-csu units`` shows the
unit's address. A connection from the proxy's address without the header is closed."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from pathlib import Path

from edge.csu import lab
from edge.csu.bench_cmd import CSU_NAME, SimUnit, _put, _setup
from edge.uplink.protocol import segment_path

from .conftest import REPO, tool
from .uplink_util import wait_until


async def _connect(
    port: int, unit: SimUnit, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=unit.ctx, server_hostname=CSU_NAME, local_addr=(source, 0)
        ),
        10,
    )


async def _upload(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, unit: SimUnit) -> int:
    seq, raw = unit.next_segment(1.0)
    return await asyncio.wait_for(
        _put(reader, writer, segment_path(unit.unit_id, "cam1", seq), raw), 10
    )


async def _scenario(proxy_port: int, receiver_port: int, units: list[SimUnit]) -> dict[str, object]:
    out: dict[str, object] = {}
    # two connections from the unit at 127.0.0.2: its allowance (2) is used up
    held = [await _connect(proxy_port, units[0], "127.0.0.2") for _ in range(2)]
    out["first_two"] = [await _upload(r, w, units[0]) for r, w in held]
    # a third from the same unit is closed by the gate before any TLS work
    try:
        r, w = await _connect(proxy_port, units[0], "127.0.0.2")
        out["third"] = await _upload(r, w, units[0])
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, IndexError, TimeoutError) as exc:
        out["third"] = type(exc).__name__
    # another unit behind the same proxy is not affected
    r, w = await _connect(proxy_port, units[1], "127.0.0.3")
    out["other_unit"] = await _upload(r, w, units[1])
    w.close()
    # straight from the proxy's address, without the header: closed
    try:
        r, w = await _connect(receiver_port, units[2], "127.0.0.1")
        out["without_header"] = await _upload(r, w, units[2])
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, IndexError, TimeoutError) as exc:
        out["without_header"] = type(exc).__name__
    for _, writer in held:
        writer.close()
    return out


def test_units_behind_haproxy_are_counted_and_shown_by_their_own_address(tmp_path: Path) -> None:
    tool("haproxy")
    _, units, tls = _setup(tmp_path, 3, 2048)
    receiver = lab.ReceiverProcess("r1", tmp_path / "r1", lab.free_port())
    receiver.directory.mkdir()
    receiver.config.write_text(
        f'storage_dir = "storage"\nregistry_dir = "{tmp_path / "units"}"\n'
        f'[units]\nhost = "127.0.0.1"\nport = {receiver.port}\n[operators_listen]\nport = 0\n'
        f'[tls]\ncert_file = "{tls.cert_file}"\nkey_file = "{tls.key_file}"\n'
        f'client_ca_file = "{tls.client_ca_file}"\n'
        '[limits]\nproxy_protocol_from = ["127.0.0.1"]\nmax_connections_per_source = 2\n'
        "handshake_timeout_s = 3\n"
    )
    proxy = lab.HAProxy(tmp_path / "haproxy", lab.free_port(), [receiver.port])
    receiver.start()
    try:
        proxy.start()
        result = asyncio.run(_scenario(proxy.port, receiver.port, units))

        def peers() -> dict[str, str | None]:
            run = subprocess.run(
                [sys.executable, "-m", "edge.csu.main", "units", "--config",
                 str(receiver.config), "--json"],
                capture_output=True, text=True, timeout=60, cwd=REPO, check=True,
            )  # fmt: skip
            return {row["unit"]: row["peer"] for row in json.loads(run.stdout)}

        wait_until(lambda: peers().get(units[1].unit_id) is not None, 10, "unit status")
        shown = peers()
    finally:
        proxy.stop()
        receiver.stop()
    assert result["first_two"] == [201, 201], result
    assert result["third"] != 201, result
    assert result["other_unit"] == 201, result
    assert result["without_header"] != 201, result
    assert shown[units[0].unit_id] == "127.0.0.2" and shown[units[1].unit_id] == "127.0.0.3"
    log = receiver.log()
    assert "refused a connection from 127.0.0.2 on the units listener" in log, log[-2000:]
    assert "closed a connection from proxy 127.0.0.1: no PROXY protocol v2 header" in log

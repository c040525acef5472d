"""``edge-csu bench --units N --rate-mbps R --json``: how many units one receiver core carries.

Everything real and on loopback: a city CA, N enrolled units with their own certificates and
signing keys, the real ``edge-csu serve`` in its own process, TLS 1.3 with client certificates.

1. **Paced**: N simulated units each push one sealed segment every ``--segment-s`` seconds at
   ``--rate-mbps``; we measure the receiver process's CPU time (``/proc``) and the live latency
   (segment closed on the unit -> acknowledged as stored), p50 and p95. Units per core =
   N / (receiver CPU seconds per wall second), valid only while it kept up (``kept_up``).
2. **Flat out**: the same segments pushed back to back over a few connections, once to the
   receiver and once to a raw TLS sink (same TLS settings, reads and discards the body, no
   verification, no storage) in the same run: the ratio says what verification and durable
   storage cost against moving the bytes at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu.receiver.settings import TlsConfig
from edge.identity import public_pem

from ..clihelp import add_command
from ..uplink.protocol import SEGMENT_CONTENT_TYPE, segment_path
from ..vault import format as fmt
from .ca import Profile, VideoCA, cert_pem, key_pem
from .receiver.registry import UnitRegistry, server_context

CSU_NAME = "csu.bench"


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "bench",
        help="measure receiver capacity against a raw TLS sink (JSON with --json)",
        description="Measure the receiver's capacity on this machine: simulated units upload "
        "signed segments at a paced rate (latency), then flat out (throughput), each against "
        "a raw TLS sink measured in the same run.",
        example=[
            ("edge-csu bench --units 100 --rate-mbps 2", "a city's fleet at 2 Mbit/s per unit"),
            ("edge-csu bench --units 20 --seconds 5 --json", "a quick run, for scripts"),
            (
                "edge-csu bench --cluster --units 20 --seconds 20 --json",
                "cluster mode on this machine: HAProxy, 2 receivers, PostgreSQL, Swift",
            ),
            (
                "edge-csu bench --index-database 'host=/run/postgresql dbname=edge_bench' --json",
                "the cluster mode's PostgreSQL index: decisions per second, 1 and 2 receivers",
            ),
        ],
    )
    parser.add_argument("--units", type=int, default=100, help="simulated units (default 100)")
    parser.add_argument("--rate-mbps", type=float, default=2.0, help="per unit (default 2)")
    parser.add_argument("--seconds", type=float, default=20.0, help="paced phase length")
    parser.add_argument("--segment-s", type=float, default=2.0, help="segment duration")
    parser.add_argument("--flat-connections", type=int, default=16, help="flat-out connections")
    parser.add_argument("--flat-seconds", type=float, default=8.0, help="flat-out phase length")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default temp)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--index-database",
        metavar="CONNINFO",
        default=None,
        help="instead: chain decisions per second of the cluster mode's PostgreSQL index, "
        "1 and 2 receivers, against the embedded store (e.g. 'host=/run/postgresql "
        "dbname=edge_bench')",
    )
    parser.add_argument(
        "--index-segments", type=int, default=4000, help="segments decided per run (default 4000)"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="instead: the cluster mode on this machine (HAProxy, --receivers receivers, "
        "PostgreSQL, Swift; Debian packages haproxy, postgresql, swift-*; as root): units per "
        "receiver core against embedded, scaling 1 to K receivers, fail-over time",
    )
    parser.add_argument(
        "--receivers", type=int, default=2, help="receivers of --cluster (default 2)"
    )
    parser.set_defaults(func=_main)


@dataclass
class SimUnit:
    unit_id: str
    ctx: ssl.SSLContext
    key: ed25519.Ed25519PrivateKey
    ciphertext: bytes
    sequence: int = 0
    prev_hash: bytes = fmt.ZERO_HASH

    def next_segment(self, duration_s: float) -> tuple[int, bytes]:
        end = time.time_ns()
        header = fmt.SegmentHeader(
            device_id=self.unit_id,
            camera_id="cam1",
            sequence=self.sequence,
            start_wall_ns=end - int(duration_s * 1e9),
            end_wall_ns=end,
            frame_count=int(25 * duration_s),
            first_frame_index=self.sequence * int(25 * duration_s),
            epoch_id=bytes(16),
            nonce=bytes(12),
            prev_hash=self.prev_hash,
            init_len=0,
            ciphertext_len=len(self.ciphertext),
        )
        raw = fmt.sign_segment(header, self.ciphertext, self.key)
        self.prev_hash = fmt.sha256(raw)
        self.sequence += 1
        return self.sequence - 1, raw


async def _put(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes
) -> int:
    writer.write(
        f"PUT {path} HTTP/1.1\r\nHost: csu\r\nContent-Type: {SEGMENT_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    writer.write(body)
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return int(status_line.split()[1])


async def _connect(port: int, unit: SimUnit) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=unit.ctx, server_hostname=CSU_NAME)


async def _paced(port: int, units: list[SimUnit], args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + args.seconds

    async def run(i: int, unit: SimUnit) -> None:
        nonlocal failures
        reader, writer = await _connect(port, unit)
        # spread the units over one segment period, as real units are
        next_at = time.monotonic() + args.segment_s * i / len(units)
        while next_at < deadline:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            closed = time.monotonic()
            seq, raw = unit.next_segment(args.segment_s)
            status = await _put(reader, writer, segment_path(unit.unit_id, "cam1", seq), raw)
            if status != 201:
                failures += 1
            latencies.append(time.monotonic() - closed)
            next_at += args.segment_s
        writer.close()

    await asyncio.gather(*(run(i, u) for i, u in enumerate(units)))
    latencies.sort()
    return {
        "segments": len(latencies),
        "failures": failures,
        "latency_p50_s": round(latencies[len(latencies) // 2], 4) if latencies else None,
        "latency_p95_s": round(latencies[int(len(latencies) * 0.95)], 4) if latencies else None,
        "latency_max_s": round(latencies[-1], 4) if latencies else None,
    }


async def _flat(port: int, units: list[SimUnit], args: argparse.Namespace) -> float:
    """Bytes per second pushed back to back over ``flat_connections`` connections."""
    sent = 0
    deadline = time.monotonic() + args.flat_seconds

    async def run(unit: SimUnit) -> None:
        nonlocal sent
        reader, writer = await _connect(port, unit)
        while time.monotonic() < deadline:
            seq, raw = unit.next_segment(args.segment_s)
            status = await _put(reader, writer, segment_path(unit.unit_id, "cam1", seq), raw)
            if status not in (200, 201):
                raise RuntimeError(f"flat-out segment refused: {status}")
            sent += len(raw)
        writer.close()

    start = time.monotonic()
    await asyncio.gather(*(run(u) for u in units[: args.flat_connections]))
    return sent / (time.monotonic() - start)


async def _raw_sink(tls: TlsConfig, ready: asyncio.Future[int], stop: asyncio.Event) -> None:
    """TLS 1.3 with client certificates, minimal HTTP framing, body read and discarded."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = -1
                while True:
                    line = await reader.readline()
                    if not line:
                        return
                    if line == b"\r\n":
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(max(0, length))
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context(tls))
    ready.set_result(server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _setup(work: Path, count: int, segment_bytes: int) -> tuple[Path, list[SimUnit], TlsConfig]:
    ca = VideoCA.init(work / "ca")
    (work / "chain.pem").write_bytes(ca.chain_pem)
    keys = work / "keys"
    keys.mkdir()
    key, cert = ca.issue(CSU_NAME, profile=Profile.SERVER, dns_names=(CSU_NAME,))
    (keys / "csu.crt").write_bytes(cert_pem(cert) + ca.chain_pem)
    (keys / "csu.key").write_bytes(key_pem(key))
    ciphertext = os.urandom(segment_bytes)
    units = []
    for i in range(count):
        unit_id = f"bench-{i:04d}"
        signing = ed25519.Ed25519PrivateKey.generate()
        UnitRegistry.enroll(work / "units", unit_id, public_pem(signing.public_key()))
        ukey, ucert = ca.issue(unit_id)
        crt, kfile = work / "unit.crt", work / "unit.key"
        crt.write_bytes(cert_pem(ucert))
        kfile.write_bytes(key_pem(ukey))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(work / "chain.pem")
        ctx.load_cert_chain(crt, kfile)
        units.append(SimUnit(unit_id, ctx, signing, ciphertext))
    tls = TlsConfig(
        cert_file=keys / "csu.crt", key_file=keys / "csu.key", client_ca_file=work / "chain.pem"
    )
    config = work / "csu.toml"
    config.write_text(
        f'storage_dir = "storage"\nregistry_dir = "units"\naudit_log = "audit.jsonl"\n'
        f'[units]\nport = 0\n[operators_listen]\nport = 0\n[tls]\ncert_file = "{tls.cert_file}"\n'
        f'key_file = "{tls.key_file}"\nclient_ca_file = "{tls.client_ca_file}"\n'
        # every simulated unit dials from 127.0.0.1: one source, so its limit is lifted
        f"[limits]\nmax_connections_per_source = {count + 64}\n"
        f"max_connections = {max(2000, count + 64)}\n"
    )
    return config, units, tls


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edge-csu-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        segment_bytes = int(args.rate_mbps * 1e6 / 8 * args.segment_s)
        config, units, tls = _setup(work, args.units, segment_bytes)
        ports_file = work / "ports.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.csu.main", "serve", "--config", str(config),
             "--ports-file", str(ports_file), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not ports_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the receiver did not start")
                time.sleep(0.05)
            port = json.loads(ports_file.read_text())["units"]
            cpu0, wall0 = _cpu_seconds(proc.pid), time.monotonic()
            paced = asyncio.run(_paced(port, units, args))
            cpu_s, wall_s = _cpu_seconds(proc.pid) - cpu0, time.monotonic() - wall0
            receiver_rate = asyncio.run(_flat(port, units, args))
        finally:
            proc.terminate()
            proc.wait(10)

        async def sink_rate() -> float:
            ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            stop = asyncio.Event()
            task = asyncio.create_task(_raw_sink(tls, ready, stop))
            rate = await _flat(await ready, units, args)
            stop.set()
            await task
            return rate

        raw_rate = asyncio.run(sink_rate())
    cpu_share = cpu_s / wall_s
    expected = args.units * int(args.seconds / args.segment_s)
    kept_up = paced["failures"] == 0 and paced["segments"] >= 0.9 * expected
    kept_up = kept_up and (paced["latency_p95_s"] or 0) < args.segment_s
    return {
        "units": args.units,
        "rate_mbps_per_unit": args.rate_mbps,
        "segment_bytes": segment_bytes,
        "paced": paced,
        "receiver_cpu_share": round(cpu_share, 4),
        "kept_up": kept_up,
        "units_per_core": round(args.units / cpu_share, 1) if cpu_share > 0 else None,
        "receiver_flat_mb_s": round(receiver_rate / 1e6, 2),
        "raw_tls_sink_mb_s": round(raw_rate / 1e6, 2),
        "ratio_to_raw_sink": round(receiver_rate / raw_rate, 3),
        "cpus": os.cpu_count(),
    }


def _main(args: argparse.Namespace) -> int:
    from edge.bench.machine import describe

    if args.cluster:
        from . import bench_cluster

        name, figures = "csu-cluster", bench_cluster.run_lab(args)
    elif args.index_database is not None:
        from . import bench_cluster

        name = "csu-cluster-index"
        figures = bench_cluster.run(args.index_database, segments=args.index_segments)
    else:
        name, figures = "csu-receiver", run(args)
    result = {**describe(), **figures}  # the figures with the machine and its load
    if args.json:
        json.dump({"benchmark": name, **result}, sys.stdout)
        sys.stdout.write("\n")
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    return 0

"""``edge-csu bench --index-database CONNINFO``: how many chain decisions per second the
cluster mode's judge (PostgreSQL, :mod:`.receiver.pgindex`) makes, with one receiver and with
two, against the embedded store's decision and write in the same run.

Segments are real (signed sealed segments, chained per camera), prepared before timing. The
baseline is the embedded store (:class:`.receiver.archive.SegmentStore`: check, fsync'd file,
index line) on this machine's disk, one thread per receiver as in the cluster runs. A camera
sends one segment every few seconds, so decisions per second divided by segments per second
per camera is how many cameras the judge could serve. Run it against the city's own database
(a fresh one: it creates the tables and leaves its rows, under unit ``bench-<pid>``).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ..vault import format as fmt
from .receiver.archive import SegmentStore, StoredSegment, checked_segment
from .receiver.pgindex import PgSegmentIndex


def _chains(
    unit: str, cameras: int, per_camera: int, key: ed25519.Ed25519PrivateKey
) -> list[list[bytes]]:
    ciphertext = os.urandom(2048)
    out = []
    for c in range(cameras):
        prev, chain = fmt.ZERO_HASH, []
        for s in range(per_camera):
            end = time.time_ns()
            header = fmt.SegmentHeader(
                device_id=unit, camera_id=f"cam{c}", sequence=s, start_wall_ns=end - 2 * 10**9,
                end_wall_ns=end, frame_count=50, first_frame_index=s * 50, epoch_id=bytes(16),
                nonce=bytes(12), prev_hash=prev, init_len=0, ciphertext_len=len(ciphertext),
            )  # fmt: skip
            raw = fmt.sign_segment(header, ciphertext, key)
            prev = fmt.sha256(raw)
            chain.append(raw)
        out.append(chain)
    return out


def _timed(workers: list[Any]) -> float:
    threads = [threading.Thread(target=w) for w in workers]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def run(conninfo: str, *, segments: int, receivers: int = 2) -> dict[str, Any]:
    unit = f"bench-{os.getpid()}"
    key = ed25519.Ed25519PrivateKey.generate()
    cameras = 2 * receivers  # each receiver takes its own cameras, as HAProxy spreads units
    per_camera = max(1, segments // cameras)
    chains = _chains(unit, cameras, per_camera, key)
    public = key.public_key()
    metas: list[list[StoredSegment]] = [
        [checked_segment(unit, f"cam{c}", s, raw, public) for s, raw in enumerate(chain)]
        for c, chain in enumerate(chains)
    ]
    total = cameras * per_camera
    setup = PgSegmentIndex(conninfo, "bench")
    setup.migrate()
    setup.close()

    def embedded(store: SegmentStore, cams: list[int]) -> Any:
        def work() -> None:
            for c in cams:
                for s, raw in enumerate(chains[c]):
                    store.accept_segment(unit, f"cam{c}", s, raw, public)

        return work

    def cluster(index: PgSegmentIndex, cams: list[int], suffix: str) -> Any:
        def work() -> None:
            for c in cams:
                for meta in metas[c]:
                    index.accept(unit + suffix, f"cam{c}", meta)

        return work

    def split(n: int) -> list[list[int]]:
        return [list(range(cameras))[i::n] for i in range(n)]

    result: dict[str, Any] = {"segments": total, "cameras": cameras}
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        for n in (1, receivers):
            store = SegmentStore(Path(tmp) / f"run{n}")
            result[f"embedded_{n}_per_s"] = round(
                total / _timed([embedded(store, cams) for cams in split(n)]), 1
            )
    for n in (1, receivers):
        indexes = [PgSegmentIndex(conninfo, f"bench-{i}") for i in range(n)]
        seconds = _timed(
            [cluster(idx, cams, f"-{n}") for idx, cams in zip(indexes, split(n), strict=True)]
        )
        for idx in indexes:
            idx.close()
        result[f"cluster_{n}_per_s"] = round(total / seconds, 1)
    one, many = result["cluster_1_per_s"], result[f"cluster_{receivers}_per_s"]
    result[f"cluster_scaling_1_to_{receivers}"] = round(many / one, 2)
    result["cluster_to_embedded"] = round(one / result["embedded_1_per_s"], 2)
    result["cameras_at_one_segment_per_4s"] = int(many * 4)
    result["cpus"] = os.cpu_count()
    return result


# --- edge-csu bench --cluster: the whole path on this machine -----------------------------------


def _paced(port: int, units: list[Any], args: Any, actions: list[Any] | None = None) -> Any:
    from .simfleet import SimFleet

    fleet = SimFleet(units, port, segment_s=args.segment_s)
    return asyncio.run(fleet.run(args.seconds, actions=actions, drain_s=max(30.0, args.seconds)))


def _receiver_share(receivers: list[Any], run: Any) -> tuple[Any, float]:
    """Run ``run()``; the CPU seconds per wall second meanwhile of the receivers still alive
    at the end (a receiver killed during the run takes its count with it)."""
    cpu0 = {r.name: r.cpu_seconds() for r in receivers}
    wall0 = time.monotonic()
    out = run()
    wall = time.monotonic() - wall0
    alive = [r for r in receivers if r.proc is not None and r.proc.poll() is None]
    return out, sum(r.cpu_seconds() - cpu0[r.name] for r in alive) / wall


def _kept_up(report: Any, args: Any) -> bool:
    f = report.figures()
    return bool(
        f["segments_waiting"] == 0
        and f["segments_refused"] == 0
        and f["segments_produced"] >= 0.9 * report.units * int(args.seconds / args.segment_s)
        and (f["latency_p95_s"] or 0.0) < args.segment_s
    )


def run_lab(args: Any) -> dict[str, Any]:
    """HAProxy + K receivers + PostgreSQL + Swift on this machine (:mod:`.lab`), driven by
    simulated units (:mod:`.simfleet`), against one embedded receiver in the same run.

    The units' chains run on through the phases (as a real unit's would through a CSU
    change): one receiver paced, flat out with 1 and K receivers, K receivers paced with one
    killed (then the cluster is audited: everything produced so far must be there once), and
    last the embedded receiver, paced, on its own directory."""
    from . import lab
    from .bench_cmd import _setup

    k = args.receivers
    segment_bytes = int(args.rate_mbps * 1e6 / 8 * args.segment_s)
    result: dict[str, Any] = {
        "units": args.units,
        "rate_mbps_per_unit": args.rate_mbps,
        "segment_s": args.segment_s,
        "segment_bytes": segment_bytes,
        "receivers": k,
        "seconds": args.seconds,
    }
    with tempfile.TemporaryDirectory(prefix="edge-csu-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        (work / "fleet").mkdir()
        _, units, tls = _setup(work / "fleet", args.units, segment_bytes)
        with lab.postgres_server() as pg, lab.swift_s3() as s3:
            lab.ensure_bucket(s3)
            shared = lab.ClusterShared(
                tls.cert_file, tls.key_file, tls.client_ca_file, work / "fleet" / "units",
                pg.conninfo, s3,
            )  # fmt: skip
            # 1. one receiver behind HAProxy: CPU per unit in cluster mode, then flat out
            with lab.cluster_front(work / "k1", shared, 1) as front:
                port = front.port
                report, share = _receiver_share(front.receivers, lambda: _paced(port, units, args))
                flat1 = _flat(port, units, args)
            result["cluster_1"] = {
                **_phase(report, share, args),
                "units_per_receiver_core": round(args.units / share, 1) if share else None,
                "flat_out_segments_per_s": flat1,
            }
            # 2. K receivers: the same flat-out load (scaling), then paced with a kill -9
            with lab.cluster_front(work / f"k{k}", shared, k) as front:
                port = front.port
                flat_k = _flat(port, units, args)
                victim = front.receivers[0]
                kill = [(args.seconds / 3, f"kill -9 {victim.name}", victim.kill)]
                report, share = _receiver_share(
                    front.receivers, lambda: _paced(port, units, args, kill)
                )
            audit = lab.audit_cluster(
                pg.conninfo, s3, {u.unit_id: (u.sequence, u.key.public_key()) for u in units}
            )
            result[f"cluster_{k}"] = {
                **_phase(report, share, args),
                "flat_out_segments_per_s": flat_k,
                "audit_after_all_cluster_phases": audit,
            }
        # 3. the embedded baseline: one receiver, its own directory, no proxy
        embedded = lab.ReceiverProcess("embedded", work / "embedded", lab.free_port())
        embedded.directory.mkdir()
        embedded.config.write_text(
            f'storage_dir = "storage"\nregistry_dir = "{work / "fleet" / "units"}"\n'
            f'audit_log = "audit.jsonl"\n[units]\nhost = "127.0.0.1"\nport = {embedded.port}\n'
            f'[operators_listen]\nport = 0\n[tls]\ncert_file = "{tls.cert_file}"\n'
            f'key_file = "{tls.key_file}"\nclient_ca_file = "{tls.client_ca_file}"\n'
            "[limits]\nmax_connections_per_source = 10000\nmax_connections = 10000\n"
        )
        embedded.start()
        try:
            report, share = _receiver_share([embedded], lambda: _paced(embedded.port, units, args))
        finally:
            embedded.stop()
        result["embedded"] = {
            **_phase(report, share, args),
            "units_per_receiver_core": round(args.units / share, 1) if share else None,
        }
    fig = result[f"cluster_{k}"]
    # same load, same stores, same machine: what the other receivers add
    result[f"scaling_1_to_{k}_receivers"] = round(flat_k / flat1, 2) if flat1 else None
    result["failover_p50_s"] = fig["failover_p50_s"]
    result["failover_max_s"] = fig["failover_max_s"]
    emb = result["embedded"]["units_per_receiver_core"]
    clu = result["cluster_1"]["units_per_receiver_core"]
    result["cluster_to_embedded_units_per_core"] = round(clu / emb, 2) if emb and clu else None
    result["units_sustained_at_rate"] = (
        args.units if result["cluster_1"]["kept_up"] and fig["kept_up"] else None
    )
    # what the whole lab (proxy, receivers, database, object store on this machine) carries
    # flat out, in units at the given rate (one segment per unit every segment_s)
    result["lab_capacity_units_at_rate"] = {
        "1_receiver": int(flat1 * args.segment_s),
        f"{k}_receivers": int(flat_k * args.segment_s),
    }
    result["cpus"] = os.cpu_count()
    return result


def _phase(report: Any, share: float, args: Any) -> dict[str, Any]:
    return {
        **{k: v for k, v in report.figures().items() if k not in ("units", "seconds")},
        "receiver_cpu_share": round(share, 3),
        "kept_up": _kept_up(report, args),
    }


def _flat(port: int, units: list[Any], args: Any) -> float:
    from .simfleet import SimFleet

    fleet = SimFleet(units[: args.flat_connections], port, segment_s=args.segment_s, flat_out=True)
    report = asyncio.run(fleet.run(args.flat_seconds, drain_s=30.0))
    return round(report.acknowledged / report.seconds, 1)

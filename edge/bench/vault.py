"""vault: sealing throughput and its share of recording CPU, recovery and range look-up times.

* Sealing: real H.264 segments from the recorder's encoder (same synthetic content as
  ``bench encode``) are sealed (AES-256-GCM, Ed25519, SHA-256 chain) and written durably
  (temporary file, fsync, rename, fsync of the directory). Baselines in the same run: a plain
  memory copy of the same bytes (``seal_vs_memcpy``) and the CPU the encoder spent producing
  them (``seal_share_of_recording_cpu`` = sealing CPU / (encoding CPU + sealing CPU)).
* Recovery: an index of ``--rows`` segments (1.3 M = 30 days of 2 s segments) is generated
  (rows, not video), a few real sealed files at its tail; then the vault is opened (start-up is
  recovery) and timed. Baseline: opening the same SQLite database and counting its rows.
* Range look-up: segments of a 10-minute range in the middle of that index.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.vault import RetentionPolicy, Vault, load_public, write_keypair
from edge.video import MediaSegment, SegmentEncoder

from ..config import EncoderConfig, RecipientKem
from .encode import synthetic_frames

SEG_NS = 2_000_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=1280, help="frame width (default 1280)")
    parser.add_argument("--height", type=int, default=720, help="frame height (default 720)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    parser.add_argument("--seconds", type=float, default=8.0, help="video to encode (default 8)")
    parser.add_argument(
        "--rows", type=int, default=1_300_000, help="index rows for the recovery test (1.3 M)"
    )
    parser.add_argument(
        "--kem",
        choices=[k.value for k in RecipientKem],
        default=RecipientKem.MLKEM768_X25519.value,
        help="recipient KEM",
    )
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: /tmp)")


def _vault(root: Path, kem: RecipientKem, key: ed25519.Ed25519PrivateKey | None = None) -> Vault:
    pub = root / "csu" / "csu.pub.json"
    if not pub.exists():
        pub, _key = write_keypair(root / "csu", kem)
    return Vault(
        root / "vault",
        device_id="bench-unit",
        signing_key=key or ed25519.Ed25519PrivateKey.generate(),
        recipients=[load_public(pub)],
        policy=RetentionPolicy(30),
    )


def _encode(args: argparse.Namespace) -> tuple[list[MediaSegment], float, float]:
    count = round(args.seconds * args.fps)
    frames = synthetic_frames(args.width, args.height, count, args.fps)
    enc = SegmentEncoder("cam1", args.width, args.height, args.fps, EncoderConfig())
    segments: list[MediaSegment] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for frame in frames:
        segments.extend(enc.encode(frame))
    segments.extend(enc.flush())
    return segments, time.process_time() - cpu0, time.perf_counter() - wall0


def _sealing(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    segments, enc_cpu, enc_wall = _encode(args)
    payload = sum(len(s.init) + len(s.media) for s in segments)
    vault = _vault(work / "seal", RecipientKem(args.kem))
    try:
        vault.write(segments[0])  # first write draws the epoch key: not part of steady state
        rounds = max(1, round(20e6 / max(1, payload)))  # about 20 MB through the vault
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            for seg in segments:
                vault.write(seg)
        seal_cpu = (time.process_time() - cpu0) / rounds
        seal_wall = (time.perf_counter() - wall0) / rounds
    finally:
        vault.close()
    blob = b"".join(s.init + s.media for s in segments)
    t0 = time.perf_counter()
    for _ in range(20):
        copied = bytearray(blob)
    memcpy_s = (time.perf_counter() - t0) / 20
    del copied
    mb = payload / 1e6
    return {
        "video": f"{args.width}x{args.height} {args.fps:g} fps, {args.seconds:g} s, "
        f"{len(segments)} segment(s), {mb:.2f} MB",
        "seal_mb_per_s": round(mb / seal_wall, 1),
        "seal_cpu_mb_per_s": round(mb / max(seal_cpu, 1e-9), 1),
        "memcpy_mb_per_s": round(mb / memcpy_s, 1),
        "seal_vs_memcpy": round((mb / seal_wall) / (mb / memcpy_s), 4),
        "encode_cpu_s": round(enc_cpu, 3),
        "encode_wall_s": round(enc_wall, 3),
        "seal_cpu_s": round(seal_cpu, 4),
        "seal_share_of_recording_cpu": round(seal_cpu / (enc_cpu + seal_cpu), 5),
        "seal_share_goal": 0.01,
    }


def _recovery(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    root = work / "recovery"
    key = ed25519.Ed25519PrivateKey.generate()
    vault = _vault(root, RecipientKem(args.kem), key)
    t_end = time.time_ns()
    first = t_end - args.rows * SEG_NS
    lane = vault.lane("cam1")
    lane.next_seq = args.rows  # the generated rows come before these real files
    for n in range(3):
        start = t_end + n * SEG_NS
        vault.write(
            MediaSegment("cam1", n, b"i" * 800, os.urandom(4000), start, start + SEG_NS, 50, 0)
        )
    epoch = vault.index.last("cam1")[0].epoch_id
    vault.close()
    t0 = time.perf_counter()
    # Rows generated inside SQLite (a recursive CTE): as the vault would have written them,
    # only without the video.
    db = sqlite3.connect(root / "vault" / "index.sqlite")
    db.execute("PRAGMA recursive_triggers=ON")
    with db:
        db.execute(
            "WITH RECURSIVE n(seq) AS (SELECT 0 UNION ALL SELECT seq + 1 FROM n WHERE seq + 1 < ?) "
            "INSERT INTO segments (camera, seq, start_ns, end_ns, frames, size, epoch, hash) "
            "SELECT 'cam1', seq, ? + seq * ?, ? + (seq + 1) * ?, 50, 500000, ?, randomblob(32) "
            "FROM n",
            (args.rows, first, SEG_NS, first, SEG_NS, epoch),
        )
    db.close()
    generate_s = time.perf_counter() - t0
    # Baseline: what opening the database and looking at every row costs at all.
    t0 = time.perf_counter()
    db = sqlite3.connect(root / "vault" / "index.sqlite")
    total = db.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
    db.close()
    count_s = time.perf_counter() - t0
    # As after a power cut: no clean-stop mark, so the index gets its integrity check.
    (root / "vault" / "clean-shutdown").unlink(missing_ok=True)
    t0 = time.perf_counter()
    vault = _vault(root, RecipientKem(args.kem), key)  # start-up is recovery
    recovery_s = time.perf_counter() - t0
    vault.close()
    t0 = time.perf_counter()
    vault = _vault(root, RecipientKem(args.kem), key)
    clean_start_s = time.perf_counter() - t0
    try:
        mid = first + (args.rows // 2) * SEG_NS
        lookups = []
        for k in range(50):
            lo = mid + k * 7 * SEG_NS
            t0 = time.perf_counter()
            rows = vault.find(lo, lo + 600 * 1_000_000_000)
            lookups.append(time.perf_counter() - t0)
        lookups.sort()
    finally:
        vault.close()
    return {
        "index_rows": total,
        "index_generate_s": round(generate_s, 2),
        "index_count_rows_s": round(count_s, 3),
        "recovery_s": round(recovery_s, 3),
        "recovery_goal_s": 3.0,
        "start_after_clean_stop_s": round(clean_start_s, 3),
        "recovery_vs_count_rows": round(recovery_s / max(count_s, 1e-9), 2),
        "range_10min_segments": len(rows),
        "range_10min_lookup_ms_median": round(lookups[len(lookups) // 2] * 1000, 3),
        "range_10min_lookup_ms_max": round(lookups[-1] * 1000, 3),
        "range_lookup_goal_ms": 10.0,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="edge-bench-vault-") as tmp:
        work = Path(tmp)
        result = _sealing(args, work)
        result.update(_recovery(args, work))
    return result

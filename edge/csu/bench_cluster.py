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

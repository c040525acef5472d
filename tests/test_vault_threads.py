"""Several cameras writing at once while retention runs from another thread and the uplink
marks deliveries: every chain still verifies and no write is lost or mixed up."""

from __future__ import annotations

import sqlite3
import statistics
import threading
import time
from collections.abc import Sized
from pathlib import Path

import pytest

from edge.errors import VaultError
from edge.unitkeys import keys_dir_of, load_signing_public_key
from edge.vault import layout
from edge.vault.base import OutboxKind
from edge.vault.index import Index, IndexRow
from edge.vault.verify import verify_vault

from .vault_support import SEG_NS, fake_segment, make_csu, open_vault
from .video_support import WALL0


def test_concurrent_cameras_purge_and_uplink(tmp_path: Path, data_dir: Path) -> None:
    csu = make_csu(tmp_path / "csu")
    vault = open_vault(data_dir, csu, max_bytes=120_000, epoch_seconds=0.02)
    cameras = [f"cam{i}" for i in range(4)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def record(camera: str) -> None:
        try:
            for n in range(40):
                vault.write(fake_segment(camera, n, size=1500))
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def retention() -> None:
        try:
            while not stop.is_set():
                vault.purge()
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def uplink() -> None:
        try:
            while not stop.is_set():
                for item in vault.outbox(20):
                    try:
                        item.read()
                    except VaultError:  # purged meanwhile: allowed
                        continue
                    if item.kind is OutboxKind.SEGMENT:
                        vault.mark_delivered(item.camera_id, item.sequence)
                    else:
                        vault.mark_envelope_delivered(item.camera_id, item.epoch_id)
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    writers = [threading.Thread(target=record, args=(c,)) for c in cameras]
    helpers = [threading.Thread(target=retention), threading.Thread(target=uplink)]
    for t in writers + helpers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    for t in helpers:
        t.join(60)
    assert not errors, errors
    for camera in cameras:
        assert vault.lane(camera).next_seq == 40
    vault.close()
    report = verify_vault(
        layout.vault_dir(data_dir),
        load_signing_public_key(keys_dir_of(data_dir)),
        device_id="unit-1",
    )
    assert report.ok, [str(f) for f in report.findings]
    for camera in cameras:
        summary = report.cameras[camera]
        assert summary.last == 39
        assert summary.purged_through is not None and summary.first == summary.purged_through + 1


def _bytes_on_disk(root: Path) -> int:
    return sum(
        p.stat().st_size for sub in ("segments", "epochs") for p in (root / sub).rglob("*.*")
    )


def test_byte_count_matches_the_disk_after_concurrent_writes_and_purges(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers, envelope rotation and the retention thread all change the vault's byte count;
    retention decides on it, so it must equal what the files take after any interleaving."""
    from edge.vault import store

    def yielding_len(obj: Sized) -> int:
        # The fault injected: a thread switch inside any "count += len(x)" of the vault (the
        # interpreter may switch there at any time; this makes it happen every time).
        time.sleep(0.0005)
        return len(obj)

    monkeypatch.setattr(store, "len", yielding_len, raising=False)
    csu = make_csu(tmp_path / "csu")
    vault = open_vault(data_dir, csu, max_bytes=60_000, epoch_seconds=0.0)
    stop = threading.Event()

    def record(camera: str) -> None:
        for n in range(40):
            vault.write(fake_segment(camera, n, size=700))

    def retention() -> None:
        while not stop.is_set():
            vault.purge()

    writers = [threading.Thread(target=record, args=(f"cam{i}",)) for i in range(4)]
    purger = threading.Thread(target=retention)
    for t in [*writers, purger]:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    purger.join(60)
    root = layout.vault_dir(data_dir)
    assert vault.usage().vault_bytes == _bytes_on_disk(root)
    vault.purge()
    assert vault.usage().vault_bytes == _bytes_on_disk(root) <= 60_000
    vault.close()
    again = open_vault(data_dir, csu)
    assert again.usage().vault_bytes == _bytes_on_disk(root)
    again.close()


def test_backlog_is_a_running_count_with_a_large_index(tmp_path: Path, data_dir: Path) -> None:
    """The uplink asks for the backlog before every item it sends: with 100 000 segments
    waiting (days of a CSU outage) that must stay a look-up, not a sum over every row."""
    csu = make_csu(tmp_path / "csu")
    vault = open_vault(data_dir, csu)
    vault.write(fake_segment("cam1", 0))
    count, epoch = 100_000, bytes(16)
    vault.index.insert_many(
        [
            IndexRow(
                "cam9",
                n,
                WALL0 + n * SEG_NS,
                WALL0 + (n + 1) * SEG_NS,
                50,
                1000 + n % 7,
                epoch,
                bytes(32),
            )
            for n in range(count)
        ]
    )

    def recount() -> tuple[int, int, int]:
        row = vault.index.db.execute(
            "SELECT COUNT(*), SUM(end_ns - start_ns), SUM(size) FROM segments WHERE delivered = 0"
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def timed() -> float:
        durations = []
        for _ in range(20):
            t0 = time.perf_counter()
            vault.backlog()
            durations.append(time.perf_counter() - t0)
        return statistics.median(durations)

    assert timed() < 0.005
    backlog = vault.backlog()
    assert (backlog.segments, int(backlog.seconds * 1e9), backlog.bytes) == recount()
    assert backlog.segments == count + 1
    # Deliveries, a row replaced, a purge: the count follows each one.
    for n in range(0, 1000, 3):
        vault.mark_delivered("cam9", n)
    vault.mark_delivered("cam9", 0)  # twice: counted once
    vault.index.insert(IndexRow("cam9", 5, WALL0, WALL0 + 1, 1, 10, epoch, bytes(32)))
    vault.index.delete_through("cam9", 500)
    got = vault.backlog()
    assert (got.segments, int(got.seconds * 1e9), got.bytes) == recount()
    vault.close()
    # An index written by an older version has no running count: it is counted once.
    path = layout.vault_dir(data_dir) / "index.sqlite"
    db = sqlite3.connect(path)
    db.execute("DROP TABLE running")
    db.commit()
    db.close()
    index = Index(path)
    try:
        assert index.backlog() == (got.segments, int(got.seconds * 1e9), got.bytes)
    finally:
        index.close()

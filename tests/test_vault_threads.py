"""Several cameras writing at once while retention runs from another thread and the uplink
marks deliveries: every chain still verifies and no write is lost or mixed up."""

from __future__ import annotations

import threading
from pathlib import Path

from edge.errors import VaultError
from edge.unitkeys import keys_dir_of, load_signing_public_key
from edge.vault import layout
from edge.vault.base import OutboxKind
from edge.vault.verify import verify_vault

from .vault_support import fake_segment, make_csu, open_vault


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

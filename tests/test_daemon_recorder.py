"""The recording thread: a damaged index is rebuilt while recording goes on; any death of the
thread is a signed alarm and a non-zero exit (systemd restarts edged), and stopping never hangs.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge import config as config_mod
from edge.analytics.events import SignedEvent, verify_wire
from edge.daemon import EX_SOFTWARE, Daemon
from edge.unitkeys import keys_dir_of, load_signing_public_key
from edge.vault import layout
from edge.vault.audit import read_audit
from edge.vault.base import OutboxKind
from edge.vault.store import Vault
from edge.vault.verify import verify_vault
from edge.video.base import MediaSegment

from .daemon_util import running_edged, sealed_segments, write_config
from .vault_support import fake_segment, make_csu, open_vault


def _damage_index_page(index: Path, name: str) -> None:
    """Overwrite the root page of the SQLite b-tree ``name`` (an index start-up never reads)."""
    db = sqlite3.connect(index)
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
    page = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with index.open("r+b") as fh:
        fh.seek((root - 1) * page)
        fh.write(b"\xff" * page)


def _seq(path: Path) -> int:
    match = layout.SEGMENT_RE.match(path.name)
    assert match is not None
    return int(match.group(2))


def test_index_damaged_after_a_clean_stop_is_rebuilt_and_recording_goes_on(
    tmp_path: Path, data_dir: Path
) -> None:
    config = write_config(tmp_path / "edge.toml", data_dir)
    with running_edged(config, tmp_path) as (proc, notify):
        notify.wait_for("READY=1", timeout=30)
        deadline = time.monotonic() + 30
        while len(sealed_segments(data_dir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    before = len(sealed_segments(data_dir))
    assert before >= 2
    root = layout.vault_dir(data_dir)
    assert (root / "clean-shutdown").exists()  # so start-up trusts the index without a check
    # The "only new, undelivered" partial index: the first insert of a new segment reads it.
    _damage_index_page(root / "index.sqlite", "segments_pending")
    (tmp_path / "notify.sock").unlink()
    with running_edged(config, tmp_path, "--run-for", "6") as (proc, _notify):
        assert proc.wait(timeout=60) == 0  # used to hang: the recorder died, stop() blocked
        assert proc.stderr is not None
        log = proc.stderr.read()
    assert "vault index damaged while recording" in log
    assert "Traceback" not in log
    after = sealed_segments(data_dir)
    assert len(after) >= before + 3, "recording did not go on after the index was rebuilt"
    assert sorted(_seq(p) for p in after) == list(range(len(after))), "sequence broken"
    assert any(p.name.endswith("index.sqlite") for p in (root / "quarantine").iterdir())
    public = load_signing_public_key(keys_dir_of(data_dir))
    report = verify_vault(root, public, device_id="test-unit")
    assert report.ok, [str(f) for f in report.findings]
    assert report.cameras["cam1"].segments_ok == len(after)
    records, problems = read_audit(root / "audit.log", public)
    assert not problems
    rebuilt = [r for r in records if r.action == "index-rebuilt"]
    assert len(rebuilt) == 1 and "malformed" in rebuilt[0].details["reason"]


class _DyingVault(Vault):
    """Fault injection: the second segment's write raises what nothing expects."""

    def write(self, segment: MediaSegment) -> None:
        if segment.sequence >= 1:
            raise RuntimeError("injected fault in the sink")
        super().write(segment)


def test_a_dead_recording_thread_is_a_signed_alarm_and_a_non_zero_exit(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path / "edge.toml", data_dir)
    cfg, origin = config_mod.load(config)
    monkeypatch.setattr("edge.daemon.make_sink", _DyingVault.from_config)
    daemon = Daemon(cfg, origin, config)
    events: list[SignedEvent] = []
    start = daemon.start

    def start_and_listen() -> None:
        start()
        assert daemon.alerts is not None
        daemon.alerts.add_listener(events.append)

    monkeypatch.setattr(daemon, "start", start_and_listen)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(daemon.run(run_for=120)), daemon=True)
    started = time.monotonic()
    runner.start()
    # Stopping used to block forever on the full queue of the dead recorder.
    runner.join(timeout=60)
    assert not runner.is_alive(), "edged went on (or hung) after its recording thread died"
    assert result == [EX_SOFTWARE]
    assert time.monotonic() - started < 60
    public = load_signing_public_key(keys_dir_of(data_dir))
    alarms = [verify_wire(e.wire(), public) for e in events if e.kind == "recording-stopped"]
    assert len(alarms) == 1
    assert alarms[0]["camera"] == "cam1" and alarms[0]["state"] == "raised"
    assert "injected fault in the sink" in alarms[0]["details"]["message"]
    records, problems = read_audit(layout.vault_dir(data_dir) / "audit.log", public)
    assert not problems
    assert [r.details["camera"] for r in records if r.action == "recording-stopped"] == ["cam1"]


def test_two_cameras_meeting_a_damaged_index_rebuild_it_once(tmp_path: Path) -> None:
    """The vault alone: concurrent writers and the uplink's outbox all meet the damage."""
    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    vault = open_vault(data, csu)
    for n in range(4):
        for cam in ("cam1", "cam2"):
            vault.write(fake_segment(cam, n))
    vault.mark_delivered("cam1", 0)
    vault.close()
    root = layout.vault_dir(data)
    _damage_index_page(root / "index.sqlite", "segments_pending")
    vault = open_vault(data, csu)
    errors: list[BaseException] = []

    def record(cam: str) -> None:
        try:
            for n in range(4, 12):
                vault.write(fake_segment(cam, n))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writers = [threading.Thread(target=record, args=(cam,)) for cam in ("cam1", "cam2")]
    for w in writers:
        w.start()
    outbox = vault.outbox(limit=1000)  # the uplink's view, meeting the same damage
    for w in writers:
        w.join(timeout=60)
    assert not errors, errors
    assert outbox is not None
    rows = vault.find(0, 2**62)
    assert [(r.camera_id, r.sequence) for r in rows] == [
        (cam, n) for cam in ("cam1", "cam2") for n in range(12)
    ]
    # Delivered marks are lost with the index: every segment is offered again (the CSU
    # deduplicates by camera and sequence).
    pending = [i for i in vault.outbox(limit=1000) if i.kind is OutboxKind.SEGMENT]
    assert len(pending) == 24
    vault.close()
    public = load_signing_public_key(keys_dir_of(data))
    report = verify_vault(root, public, device_id="unit-1")
    assert report.ok, [str(f) for f in report.findings]
    records, problems = read_audit(root / "audit.log", public)
    assert not problems
    assert len([r for r in records if r.action == "index-rebuilt"]) == 1

"""Retention at the CSU: purge by age (hard cap 30 days), legal holds, signed deletion records.

Real stores on disk, real sealed segments, the real ``edge-csu`` command line and a real
``edge-csu serve`` purging by itself and on SIGUSR1.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu.receiver import SegmentStore
from edge.csu.receiver import purge as csu_purge
from edge.csu.receiver import settings as serve_config
from edge.csu.receiver.holds import HoldBook
from edge.csu.receiver.retention import DAY_NS, Hold, expired, ranges
from edge.errors import ConfigError, IntegrityError
from edge.vault import recipient_keys as vault_keys

from .conftest import REPO
from .uplink_util import Sealer, make_csu, wait_until

SEC = 1_000_000_000
UNIT = "unit-r"


def _config(tmp: Path, extra: str = "") -> serve_config.ServeConfig:
    return serve_config.parse(f'storage_dir = "storage"\n{extra}', base=tmp)


class Recorder:
    """Seals segments of one camera as a unit would, with chosen recording times, and hands
    them to a real store."""

    def __init__(self, store: SegmentStore, camera: str = "cam1") -> None:
        self.sealer = Sealer(UNIT, camera, _authority())
        self.store = store
        self.camera = camera
        self.key = self.sealer.signing_key.public_key()
        store.accept_envelope(
            UNIT, camera, self.sealer.epoch.epoch_id.hex(), self.sealer.envelope, self.key
        )

    def record(self, end_ns: int) -> int:
        seq = self.sealer.sequence
        raw = self.sealer.seal(b"init", b"m" * 200, start_ns=end_ns - 4 * SEC, end_ns=end_ns)
        self.store.accept_segment(UNIT, self.camera, seq, raw, self.key)
        return seq


_AUTHORITY: list[vault_keys.RecipientPublic] = []


def _authority() -> vault_keys.RecipientPublic:
    """A CSU recipient key for the sealer (never used to open anything here)."""
    if not _AUTHORITY:
        import tempfile

        from edge.config import RecipientKem

        with tempfile.TemporaryDirectory() as d:
            pub, _ = vault_keys.write_keypair(Path(d), RecipientKem.X25519, "authority")
            _AUTHORITY.append(vault_keys.load_public(pub))
    return _AUTHORITY[0]


def _on_disk(tmp: Path, camera: str = "cam1") -> set[int]:
    return {int(p.stem) for p in (tmp / "storage" / UNIT / camera).glob("*.seg")}


def _indexed(tmp: Path, camera: str = "cam1") -> set[int]:
    index = tmp / "storage" / UNIT / camera / "index.jsonl"
    return {json.loads(line)["sequence"] for line in index.read_text().splitlines()}


def test_the_limit_may_be_lowered_never_raised(tmp_path: Path) -> None:
    assert _config(tmp_path).retention.days == 30
    assert _config(tmp_path, "[retention]\ndays = 7\n").retention.days == 7
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, "[retention]\ndays = 31\n")
    assert "retention.days" in str(err.value) and "30" in str(err.value)


def test_pure_policy_counts_age_from_the_earlier_clock_and_honours_holds() -> None:
    from edge.csu.receiver.archive import StoredSegment

    now = 100 * DAY_NS

    def seg(seq: int, end: int, received: int) -> StoredSegment:
        return StoredSegment(seq, "h", "p", end - 4 * SEC, end, 100, 0, "e", 10, received)

    old = seg(1, now - 31 * DAY_NS, now - 31 * DAY_NS)
    # a unit whose clock ran a year ahead: its arrival time here still ages it
    ahead = seg(2, now + 365 * DAY_NS, now - 31 * DAY_NS)
    # a late backfill of an old recording: aged from when it was filmed
    late = seg(3, now - 31 * DAY_NS, now - DAY_NS)
    young = seg(4, now - 29 * DAY_NS, now - 29 * DAY_NS)
    gone, held = expired(UNIT, "cam1", [old, ahead, late, young], [], now_ns=now, days=30)
    assert [m.sequence for m in gone] == [1, 2, 3] and held == []
    hold = Hold("H-1", "PV 1", UNIT, "cam1", old.start_wall_ns, old.end_wall_ns, "j", 0)
    gone, held = expired(UNIT, "cam1", [old, late], [hold], now_ns=now, days=30)
    assert [m.sequence for m in held] == [1, 3]  # both overlap the held time range
    other_camera = Hold("H-2", "PV 2", UNIT, "cam2", 0, now, "j", 0)
    assert expired(UNIT, "cam1", [old], [other_camera], now_ns=now, days=30)[1] == []
    assert ranges([7, 1, 2, 3, 9, 8]) == [[1, 3], [7, 9]]


def test_segments_past_the_limit_leave_index_and_disk_in_one_cycle(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "[retention]\ndays = 10\n")
    store = SegmentStore(cfg.storage_dir)
    rec = Recorder(store)
    now = time.time_ns()
    old = [rec.record(now - (12 - i) * DAY_NS) for i in range(3)]  # 12, 11, 10 days old
    young = [rec.record(now - DAY_NS), rec.record(now - 60 * SEC)]
    report = csu_purge.purge_once(
        store, cfg.retention, csu_purge.open_ledger(cfg.retention), now_ns=now
    )
    assert report.deleted == 3 and len(report.records) == 1
    assert _on_disk(tmp_path) == set(young) == _indexed(tmp_path)
    assert sorted(store.camera(UNIT, "cam1").segments) == young
    # a receiver started afterwards rebuilds the same view from disk alone
    assert sorted(SegmentStore(cfg.storage_dir).camera(UNIT, "cam1").segments) == young
    record = report.records[0]
    assert record["sequences"] == [[old[0], old[-1]]] and record["retention_days"] == 10
    # the epoch key envelope stays while a remaining segment needs it ...
    assert list((tmp_path / "storage" / UNIT / "cam1" / "epochs").glob("*.env"))
    # ... and goes with the last of them
    later = now + 20 * DAY_NS
    csu_purge.purge_once(store, cfg.retention, csu_purge.open_ledger(cfg.retention), now_ns=later)
    assert _on_disk(tmp_path) == set() == _indexed(tmp_path)
    assert not list((tmp_path / "storage" / UNIT / "cam1" / "epochs").glob("*.env"))
    # and a second run the same instant finds nothing more to do, and records nothing
    again = csu_purge.purge_once(
        store, cfg.retention, csu_purge.open_ledger(cfg.retention), now_ns=later
    )
    assert again.deleted == 0 and again.records == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.csu.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_deletion_records_verify_and_a_forged_or_removed_one_is_detected(tmp_path: Path) -> None:
    (tmp_path / "csu.toml").write_text('storage_dir = "storage"\n')
    cfg = serve_config.load(tmp_path / "csu.toml")
    store = SegmentStore(cfg.storage_dir)
    cams = [Recorder(store, "cam1"), Recorder(store, "cam2")]
    now = time.time_ns()
    for rec in cams:
        for late_s in (30, 20, 10):  # just past the limit: deleted on time
            rec.record(now - 30 * DAY_NS - late_s * SEC)
    ledger = csu_purge.open_ledger(cfg.retention)
    assert csu_purge.purge_once(store, cfg.retention, ledger, now_ns=now).deleted == 6
    cams[0].record(now - 30 * DAY_NS - 5 * SEC)  # a late backfill, continuing #2
    csu_purge.purge_once(store, cfg.retention, ledger, now_ns=now + SEC)
    path = csu_purge.ledger_path(cfg.retention)
    good = path.read_bytes()
    assert len(good.splitlines()) == 3

    ok = _cli("retention", "audit", "--config", str(tmp_path / "csu.toml"), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    verdict = json.loads(ok.stdout)
    assert verdict["ok"] and verdict["records"] == 3 and verdict["deleted"] == 7

    lines = good.splitlines()
    forged = json.loads(lines[1])
    forged["record"]["deleted_ns"] -= 5 * DAY_NS  # "it went on time"
    for damaged in (
        b"\n".join([lines[0], json.dumps(forged).encode(), lines[2]]) + b"\n",  # edited
        b"\n".join([lines[0], lines[2]]) + b"\n",  # a record removed
        b"\n".join([lines[0], lines[2], lines[1]]) + b"\n",  # reordered
    ):
        path.write_bytes(damaged)
        bad = _cli("retention", "audit", "--config", str(tmp_path / "csu.toml"))
        assert bad.returncode == 1 and "PROBLEM" in bad.stdout, bad.stdout + bad.stderr

    # a record signed by another key than the CSU's, well chained, is refused as forged
    impostor = ed25519.Ed25519PrivateKey.generate()
    record = json.loads(lines[0])["record"]
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    signed = {"record": record, "signature": base64.b64encode(impostor.sign(canonical)).decode()}
    path.write_bytes(json.dumps(signed, sort_keys=True).encode() + b"\n")
    bad = _cli("retention", "audit", "--config", str(tmp_path / "csu.toml"))
    assert bad.returncode == 1 and "forged" in bad.stdout

    # a segment that outlived its time is reported even when every record is right
    path.write_bytes(good)
    stale = Recorder(store, "cam3")
    stale.record(now - 45 * DAY_NS)
    late = _cli("retention", "audit", "--config", str(tmp_path / "csu.toml"))
    assert late.returncode == 1 and "cam3#0 is 45" in late.stdout and "no hold" in late.stdout
    # ... and once deleted, its record shows it went 15 days late
    csu_purge.purge_once(store, cfg.retention, ledger, now_ns=now + 2 * SEC)
    late = _cli("retention", "audit", "--config", str(tmp_path / "csu.toml"))
    assert late.returncode == 1 and "unit-r/cam3 deleted 15.00 days late" in late.stdout


def test_a_held_item_survives_the_cap_until_its_audited_release(tmp_path: Path) -> None:
    (tmp_path / "csu.toml").write_text('storage_dir = "storage"\n')
    cfg = serve_config.load(tmp_path / "csu.toml")
    store = SegmentStore(cfg.storage_dir)
    rec = Recorder(store)
    now = time.time_ns()
    seqs = [rec.record(now - 30 * DAY_NS - (4 - i) * 10 * SEC) for i in range(4)]
    # hold the third one's time range for proceedings (ISO times as an agent types them)
    held_meta = store.camera(UNIT, "cam1").segments[seqs[2]]
    added = _cli(
        "hold", "add", "--config", str(tmp_path / "csu.toml"), "--case", "PV 2026/1234",
        "--unit", UNIT, "--camera", "cam1", "--from", f"@{held_meta.start_wall_ns / 1e9 + 1}",
        "--to", f"@{held_meta.end_wall_ns / 1e9 - 1}", "--by", "j.martin", "--reason", "theft",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    hold_id = added.stdout.strip()
    listed = _cli("hold", "list", "--config", str(tmp_path / "csu.toml"), "--json")
    assert [h["case"] for h in json.loads(listed.stdout)] == ["PV 2026/1234"]

    ledger = csu_purge.open_ledger(cfg.retention)
    young = rec.record(now - 60 * SEC)
    report = csu_purge.purge_once(store, cfg.retention, ledger, now_ns=now)
    assert report.deleted == 3 and report.held == 1
    assert _on_disk(tmp_path) == {seqs[2], young} == _indexed(tmp_path)
    # what retention deleted around the held segment is not shown as a gap in the chain,
    # by this receiver nor by one started afterwards
    for index in (store.camera(UNIT, "cam1"), SegmentStore(cfg.storage_dir).camera(UNIT, "cam1")):
        status = index.status()
        assert status["chain"] == "complete" and status["gaps"] == [], status
        assert status["purged_by_retention"] == 3
    audit = _cli("retention", "audit", "--config", str(tmp_path / "csu.toml"), "--json")
    assert audit.returncode == 0 and json.loads(audit.stdout)["held"][0]["segments"] == 1

    # releasing needs a name and is recorded with it; a wrong id is refused
    assert (
        _cli(
            "hold", "release", "--config", str(tmp_path / "csu.toml"), "H-nope", "--by", "x"
        ).returncode
        != 0
    )
    released = _cli(
        "hold", "release", "--config", str(tmp_path / "csu.toml"), hold_id,
        "--by", "p.durand", "--reason", "case closed",
    )  # fmt: skip
    assert released.returncode == 0, released.stderr
    log = json.loads(_cli("hold", "list", "--config", str(tmp_path / "csu.toml"), "--all",
                          "--json").stdout)  # fmt: skip
    assert [(e["action"], e["who"], e["hold_id"]) for e in log] == [
        ("hold-add", "j.martin", hold_id),
        ("hold-release", "p.durand", hold_id),
    ]
    assert log[1]["reason"] == "case closed" and log[1]["case"] == "PV 2026/1234"
    # the next purge removes it, and records it
    report = csu_purge.purge_once(store, cfg.retention, ledger, now_ns=now + SEC)
    assert report.deleted == 1 and _on_disk(tmp_path) == {young} == _indexed(tmp_path)
    assert report.records[0]["released_hold"]["case"] == "PV 2026/1234"
    audit = _cli("retention", "audit", "--config", str(tmp_path / "csu.toml"))
    assert audit.returncode == 0, audit.stdout

    # an edited hold log stops the purge rather than let a hidden hold's evidence go
    rec2 = Recorder(store, "cam2")
    rec2.record(now - 40 * DAY_NS)
    holds = HoldBook(cfg.retention.directory).path
    holds.write_bytes(holds.read_bytes().splitlines(keepends=True)[1])
    with pytest.raises(IntegrityError, match="chain broken"):
        csu_purge.purge_once(store, cfg.retention, ledger, now_ns=now + 2 * SEC)
    assert _on_disk(tmp_path, "cam2") == {0}
    # the commands say so in one line, no traceback (exit 2), and the audit lists it
    for args in (["hold", "list"], ["retention", "purge"]):
        told = _cli(*args, "--config", str(tmp_path / "csu.toml"))
        assert told.returncode == 2 and "Traceback" not in told.stderr, told.stderr
        assert "audit chain broken" in told.stderr and "purges are stopped" in told.stderr
    audit = _cli("retention", "audit", "--config", str(tmp_path / "csu.toml"))
    assert audit.returncode == 1 and "PROBLEM: hold log:" in audit.stdout


def test_the_receiver_purges_at_start_and_on_sigusr1_and_the_command_waits_for_it(
    tmp_path: Path,
) -> None:
    csu = make_csu(tmp_path)
    csu.write_config(extra="[retention]\ndays = 5\npurge_interval_s = 3600\n")
    cfg = serve_config.load(csu.config)
    store = SegmentStore(cfg.storage_dir)
    rec = Recorder(store)
    now = time.time_ns()
    seqs = [rec.record(now - 5 * DAY_NS - (3 - i) * 10 * SEC) for i in range(3)]
    fresh = rec.record(now - 10 * SEC)
    meta = store.camera(UNIT, "cam1").segments[seqs[1]]
    HoldBook(cfg.retention.directory).add(
        case="PV 7", unit=UNIT, camera=None, from_ns=meta.start_wall_ns,
        to_ns=meta.end_wall_ns, who="j.martin",
    )  # fmt: skip
    hold_id = next(iter(HoldBook(cfg.retention.directory).active()))
    csu.start()
    try:
        cam = tmp_path / "csu" / "storage" / UNIT / "cam1"

        def stored() -> set[int]:
            return {int(p.stem) for p in cam.glob("*.seg")}

        wait_until(lambda: stored() == {seqs[1], fresh}, 20, "the purge at start")
        refused = _cli("retention", "purge", "--config", str(csu.config))
        assert refused.returncode != 0 and "SIGUSR1" in refused.stderr
        # A second receiver on the same storage (started by hand beside the service) would
        # keep its own index in memory: refused at start, naming the first one.
        second = _cli("serve", "--config", str(csu.config))
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"(edge-csu serve, pid {csu.proc.pid})" in second.stderr  # type: ignore[union-attr]
        released = _cli("hold", "release", "--config", str(csu.config), hold_id, "--by", "j.m")
        assert released.returncode == 0, released.stderr
        assert csu.proc is not None
        csu.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: stored() == {fresh}, 20, "the purge on SIGUSR1")
    finally:
        csu.stop()
    assert "Traceback" not in csu.log()
    done = _cli("retention", "purge", "--config", str(csu.config))
    assert done.returncode == 0 and json.loads(done.stdout)["deleted"] == 0
    audit = _cli("retention", "audit", "--config", str(csu.config), "--json")
    assert audit.returncode == 0 and json.loads(audit.stdout)["deleted"] == 3


def test_events_past_the_limit_go_too_unless_held(tmp_path: Path) -> None:
    import os

    from edge.events import EventSigner

    (tmp_path / "csu.toml").write_text('storage_dir = "storage"\n')
    cfg = serve_config.load(tmp_path / "csu.toml")
    store = SegmentStore(cfg.storage_dir)
    signer = EventSigner(ed25519.Ed25519PrivateKey.generate(), UNIT)
    now = time.time_ns()

    def event(camera: str, wall_ns: int) -> str:
        signed = signer.sign(
            camera=camera, category="count", kind="line-crossing", rule="north-gate",
            wall_ns=wall_ns, frame_index=1, details={"direction": "in", "count": 1},
        )  # fmt: skip
        event_id = str(signed.body["id"])
        store.store_event(UNIT, event_id, signed.wire(), to_publish=True)
        return event_id

    just_past = now - 30 * DAY_NS - 30 * SEC
    backfilled = event("cam1", just_past)  # filmed long ago, arrived now
    ahead = event("cam1", now + 365 * DAY_NS)  # the unit's clock a year ahead ...
    events_dir = tmp_path / "storage" / UNIT / "events"
    old_arrival = just_past / 1e9
    os.utime(events_dir / f"{ahead}.json", (old_arrival, old_arrival))  # ... arrived long ago
    young = event("cam1", now - DAY_NS)
    held = event("cam2", just_past)
    for with_snapshot in (backfilled, held):  # each event's sealed snapshot goes, or stays, with it
        store.snapshot_path(UNIT, with_snapshot).write_bytes(b"sealed snapshot")
    HoldBook(cfg.retention.directory).add(
        case="PV 9", unit=UNIT, camera="cam2", from_ns=now - 32 * DAY_NS,
        to_ns=now - 30 * DAY_NS, who="j.martin",
    )  # fmt: skip
    ledger = csu_purge.open_ledger(cfg.retention)
    report = csu_purge.purge_once(store, cfg.retention, ledger, now_ns=now)
    assert report.events_deleted == 2 and report.held == 1
    assert {p.name for p in events_dir.iterdir()} == {
        f"{young}.json",
        f"{young}.unpublished",
        f"{held}.json",
        f"{held}.unpublished",
        f"{held}.snp",
    }
    assert backfilled and report.records[0]["kind"] == "events"
    assert report.records[0]["count"] == 2
    ok = _cli("retention", "audit", "--config", str(tmp_path / "csu.toml"))
    assert ok.returncode == 0, ok.stdout
    stale = event("cam1", now - 45 * DAY_NS)
    late = _cli("retention", "audit", "--config", str(tmp_path / "csu.toml"))
    assert late.returncode == 1 and f"event {stale} is 45" in late.stdout


def test_the_ledger_head_is_found_after_a_record_longer_than_the_tail_read(
    tmp_path: Path,
) -> None:
    """The head is read from the file's end only; a record naming thousands of scattered
    sequences (holds fragmenting a camera) must not make the next writer break the chain."""
    from edge.csu.receiver import deletions
    from edge.csu.receiver.archive import StoredSegment

    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "deletions.jsonl"
    now = time.time_ns()
    scattered = [
        StoredSegment(s, f"{s:064x}", "0" * 64, now, now, 1, 0, "e", 1, now)
        for s in range(0, 20_000, 2)
    ]
    deletions.DeletionLedger(path, key).record(
        UNIT, "cam1", scattered, deleted_ns=now, retention_days=30
    )
    assert path.stat().st_size > 1 << 16
    for _ in range(2):  # each time a new process: the head comes from the file
        deletions.DeletionLedger(path, key).record(
            UNIT, "cam1", scattered[:1], deleted_ns=now, retention_days=30
        )
    records, head = deletions.verify(path, key.public_key())
    assert [r["n"] for r in records] == [0, 1, 2] and head.count == 3

"""Retention: the pure policy, then the vault with an injectable clock and disk usage."""

from __future__ import annotations

import time
from pathlib import Path

from edge.identity.unitkeys import keys_dir_of, load_signing_public_key
from edge.vault import layout
from edge.vault.audit import read_audit
from edge.vault.retention import (
    NS_PER_DAY,
    DiskUsage,
    RetentionPolicy,
    SegmentInfo,
    plan_purge,
)
from edge.vault.verify import verify_vault

from .vault_support import fake_segment, make_csu, open_vault
from .video_support import WALL0

HOUR = 3600 * 10**9


def _segs(n: int, *, every: int = HOUR, size: int = 100, camera: str = "a") -> list[SegmentInfo]:
    return [SegmentInfo(camera, i, i * every, i * every + every, size) for i in range(n)]


ROOMY = DiskUsage(total_bytes=10**12, free_bytes=10**12, vault_bytes=0)


def test_age_purges_exactly_what_is_older_than_retention() -> None:
    segs = _segs(24 * 40)  # 40 days, one an hour
    now = 40 * NS_PER_DAY
    plan = plan_purge(segs, RetentionPolicy(30), ROOMY, now)
    # Segment i ends at (i + 1) h: it goes when (i + 1) h <= 10 days.
    assert plan.by_age == 24 * 10 and plan.by_space == 0
    assert plan.cutoffs == {"a": 24 * 10 - 1}


def test_nothing_to_do_reads_only_the_head() -> None:
    consumed = []

    def gen() -> object:
        for s in _segs(1000):
            consumed.append(s)
            yield s

    plan = plan_purge(gen(), RetentionPolicy(30), ROOMY, 10 * HOUR)  # type: ignore[arg-type]
    assert plan.count == 0 and len(consumed) == 1


def test_space_by_max_bytes_oldest_first() -> None:
    usage = DiskUsage(10**12, 10**12, vault_bytes=1000)
    plan = plan_purge(_segs(10), RetentionPolicy(30, max_bytes=750), usage, 10 * HOUR)
    assert plan.by_space == 3 and plan.bytes == 300 and plan.cutoffs == {"a": 2}


def test_space_by_min_free_percent_and_failed_write() -> None:
    usage = DiskUsage(total_bytes=10_000, free_bytes=900, vault_bytes=5000)
    plan = plan_purge(_segs(50), RetentionPolicy(30, min_free_percent=10), usage, 50 * HOUR)
    assert plan.bytes == 100  # 1000 wanted free, 900 free
    plan = plan_purge(_segs(50), RetentionPolicy(30), usage, 50 * HOUR, extra_needed=450)
    assert plan.count == 0  # 900 free is enough for a 450-byte write
    plan = plan_purge(_segs(50), RetentionPolicy(30), usage, 50 * HOUR, extra_needed=1450)
    assert plan.bytes == 600


def test_several_cameras_prefix_per_camera() -> None:
    segs = sorted(
        _segs(10, camera="a") + _segs(10, camera="b", size=50), key=lambda s: s.start_wall_ns
    )
    usage = DiskUsage(10**12, 10**12, vault_bytes=1500)
    plan = plan_purge(segs, RetentionPolicy(30, max_bytes=1000), usage, 20 * HOUR)
    assert plan.cutoffs == {"a": 3, "b": 2} and plan.bytes == 550


def test_vault_purge_cycle_with_injected_clock(tmp_path: Path, data_dir: Path) -> None:
    now = [WALL0]
    csu = make_csu(tmp_path / "csu")
    vault = open_vault(data_dir, csu, retention_days=2, clock=lambda: now[0])
    quarter_day = NS_PER_DAY // 4
    for n in range(20):  # five days, four segments a day
        vault.write(fake_segment("cam1", 0, t0=WALL0 + n * quarter_day))
        vault.write(fake_segment("cam2", 0, t0=WALL0 + n * quarter_day + 1))
    now[0] = WALL0 + 5 * NS_PER_DAY
    plan = vault.purge()
    horizon = now[0] - 2 * NS_PER_DAY
    left = vault.find(0, 2**62)
    assert left and all(r.end_wall_ns > horizon for r in left)
    assert plan.by_age == 2 * 12  # per camera, segments 0..11 end by day 3
    assert vault.load_checkpoint("cam1") is not None
    # Nothing older than the horizon remains on disk either.
    root = layout.vault_dir(data_dir)
    assert len(list(root.glob("segments/*/*/*/*.seg"))) == len(left)
    # Second cycle with nothing to do.
    assert vault.purge().count == 0
    vault.write(fake_segment("cam1", 0, t0=WALL0 + 5 * NS_PER_DAY))
    vault.close()
    pub = load_signing_public_key(keys_dir_of(data_dir))
    report = verify_vault(root, pub, device_id="unit-1")
    assert report.ok, [str(f) for f in report.findings]
    assert report.cameras["cam1"].purged_through == 11
    records, problems = read_audit(root / "audit.log", pub)
    assert not problems
    purge = [r for r in records if r.action == "purge"]
    assert len(purge) == 1 and purge[0].details["by_age"] == plan.by_age
    # Envelopes no longer needed went with their segments (epoch per start here: one left).
    assert len(list(root.glob("epochs/*/*/*.env"))) == 2


def test_space_bound_keeps_recording(tmp_path: Path, data_dir: Path) -> None:
    csu = make_csu(tmp_path / "csu")
    vault = open_vault(data_dir, csu, max_bytes=20_000)
    for n in range(40):
        vault.write(fake_segment("cam1", n, size=1500))
    assert vault.usage().vault_bytes <= 20_000
    rows = vault.find(0, 2**62)
    assert rows[-1].sequence == 39 and len(rows) < 40
    vault.close()


def test_periodic_retention_thread(tmp_path: Path, data_dir: Path) -> None:
    from edge.identity.unitkeys import load_or_create_signing_key
    from edge.vault.recipient_keys import load_public
    from edge.vault.store import Vault

    csu = make_csu(tmp_path / "csu")
    now = [WALL0]
    vault = Vault(
        layout.vault_dir(data_dir),
        device_id="unit-1",
        signing_key=load_or_create_signing_key(keys_dir_of(data_dir)),
        recipients=[load_public(csu.pub)],
        policy=RetentionPolicy(1),
        clock=lambda: now[0],
        purge_interval_s=0.05,
    )
    try:
        for n in range(4):
            vault.write(fake_segment("cam1", n))
        now[0] = WALL0 + 2 * NS_PER_DAY
        deadline = time.monotonic() + 10
        while vault.find(0, 2**62) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not vault.find(0, 2**62)
    finally:
        vault.close()

"""Full disk on a real small file system (a size-limited tmpfs mount; needs root).

Recording goes on by evicting the oldest segments, nothing raises, the audit log records the
purges, and the chain still verifies (purged by retention, not missing).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.identity.unitkeys import keys_dir_of, load_signing_public_key
from edge.vault import layout
from edge.vault.audit import read_audit
from edge.vault.verify import verify_vault

from .conftest import REPO, require_root, tool
from .vault_support import fake_segment, make_csu, open_vault


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    require_root()
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(
        [tool("mount"), "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mnt)], check=True
    )
    try:
        yield mnt
    finally:
        subprocess.run([tool("umount"), "-l", str(mnt)], check=False)


@pytest.mark.parametrize("min_free_percent", [0.0, 15.0])
def test_recording_goes_on_when_the_disk_fills(
    min_free_percent: float, small_fs: Path, tmp_path: Path
) -> None:
    """0 %: every write runs into ENOSPC and evicts; 15 %: eviction before the disk is full."""
    csu = make_csu(tmp_path / "csu")
    data = small_fs / "data"
    vault = open_vault(data, csu, min_free_percent=min_free_percent, clock=None)
    for n in range(250):  # 25 MB into 8 MB
        vault.write(fake_segment("cam1", n, size=100_000))
    rows = vault.find(0, 2**62)
    assert rows[-1].sequence == 249, "the newest segment must be there"
    assert 20 < len(rows) < 80
    st = os.statvfs(small_fs)
    if min_free_percent:
        assert st.f_bavail / st.f_blocks >= 0.14
    vault.close()
    root = layout.vault_dir(data)
    pub = load_signing_public_key(keys_dir_of(data))
    report = verify_vault(root, pub, device_id="unit-1")
    assert report.ok, [str(f) for f in report.findings]
    assert report.cameras["cam1"].purged_through == rows[0].sequence - 1
    records, problems = read_audit(root / "audit.log", pub)
    assert not problems
    purges = [r for r in records if r.action == "purge"]
    assert purges and sum(r.details["by_space"] for r in purges) == rows[0].sequence
    if not min_free_percent:
        assert any(r.details["reason"] == "disk full" for r in purges)


def test_edged_survives_a_full_disk(small_fs: Path, tmp_path: Path) -> None:
    """The real daemon on the embedded demo configuration, data on a nearly full file system."""
    data = small_fs / "data"
    # Something else filled the card: about 1 MB is left for a recording of about 2.5 MB.
    (small_fs / "filler").write_bytes(bytes(7_000_000))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge.app.daemon",
            "--demo",
            "--run-for",
            "10",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    root = layout.vault_dir(data)
    pub = load_signing_public_key(keys_dir_of(data))
    report = verify_vault(root, pub, device_id="demo-unit")
    assert report.ok, [str(f) for f in report.findings]
    assert report.cameras["cam1"].purged_through is not None, "nothing was evicted"
    records, _ = read_audit(root / "audit.log", pub)
    assert any(r.action == "purge" for r in records)

"""Crash-only: a writer process killed with SIGKILL at random instants, then recovery.

The writer is a forked child (no interpreter start-up per iteration, so the default suite can
afford 50 kills) writing tiny segments as fast as it can, half of the iterations with a size
bound that makes every write purge (so kills also land inside purges and checkpoint writes).
After each kill the vault is reopened (recovery) and must verify completely; every segment
the child was told was written must still be there (or be covered by a retention checkpoint);
no temporary file survives.
"""

from __future__ import annotations

import os
import random
import select
import signal
import time
from pathlib import Path

import pytest

from edge.identity.unitkeys import keys_dir_of, load_signing_public_key
from edge.vault import layout
from edge.vault.verify import verify_vault

from .vault_support import Csu, fake_segment, make_csu, open_vault


def _child(data: Path, csu: Csu, max_bytes: int, wfd: int) -> None:
    try:
        rng = random.Random(os.getpid())
        vault = open_vault(data, csu, max_bytes=max_bytes, epoch_seconds=0.05)
        os.write(wfd, b"open\n")
        while True:
            lane = vault.lane("cam1")
            seg = fake_segment("cam1", lane.next_seq, size=rng.randrange(200, 3000))
            vault.write(seg)
            os.write(wfd, f"{lane.next_seq - 1}\n".encode())
    finally:
        os._exit(1)


def _run_iteration(data: Path, csu: Csu, max_bytes: int, rng: random.Random) -> set[int]:
    """Fork a writer, kill it after a random delay; return the sequences it saw committed."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        os.close(rfd)
        _child(data, csu, max_bytes, wfd)
    os.close(wfd)
    acked: set[int] = set()
    buf = b""
    # From 0 s: some kills land in the child's own start-up recovery.
    deadline = time.monotonic() + rng.uniform(0.0, 0.15)
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([rfd], [], [], left)
        if ready:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            buf += chunk
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while chunk := os.read(rfd, 65536):
        buf += chunk
    os.close(rfd)
    for line in buf.split(b"\n"):
        if line.isdigit():
            acked.add(int(line))
    return acked


def _check_after_crash(data: Path, csu: Csu, max_bytes: int, acked: set[int]) -> None:
    vault = open_vault(data, csu, max_bytes=max_bytes)  # start-up is recovery
    try:
        root = layout.vault_dir(data)
        assert not list((root / "tmp").iterdir()), "partial files left after recovery"
        ckp = vault.load_checkpoint("cam1")
        purged_through = ckp.purged_through if ckp else -1
        for seq in acked:
            if seq > purged_through:
                assert vault.index.get("cam1", seq) is not None, f"committed #{seq} lost"
        report = verify_vault(root, load_signing_public_key(keys_dir_of(data)), device_id="unit-1")
        assert report.ok, [str(f) for f in report.findings]
        if acked:
            # At most the segment in flight is missing: the next one continues the chain.
            assert vault.lane("cam1").next_seq in (max(acked) + 1, max(acked) + 2)
    finally:
        vault.close()


def _crash_loop(tmp_path: Path, iterations: int, seed: int, *, min_written: int = 0) -> int:
    """``iterations`` kills at least, and more (up to four times as many) until the writers
    were told of ``min_written`` segments: on a loaded machine a child may spend its whole
    random life starting up, and kills that only land in start-up prove little about writes."""
    rng = random.Random(seed)
    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    total = 0
    i = 0
    while i < iterations or (total < min_written and i < 4 * iterations):
        max_bytes = 30_000 if i % 2 else 0
        acked = _run_iteration(data, csu, max_bytes, rng)
        total += len(acked)
        _check_after_crash(data, csu, max_bytes, acked)
        i += 1
    return total


def test_sigkill_crash_loop(tmp_path: Path) -> None:
    total = _crash_loop(tmp_path, 50, seed=1, min_written=51)
    assert total > 50, "the writer hardly wrote anything: the test would prove little"


@pytest.mark.slow
def test_sigkill_crash_loop_long(tmp_path: Path) -> None:
    _crash_loop(tmp_path, 500, seed=2)

"""Killing edged (SIGKILL, outside systemd) with analytics on leaves nothing behind: no
analytics process, no resource tracker, no shared-memory block or semaphore in /dev/shm.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from edge.analytics.shm import RING_PREFIX, SHM_DIR

from .daemon_util import running_edged, write_config

ANALYTICS = """
[analytics]
enabled = true
rate_fps = 5
width = 160
slots = 2
"""


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _shm_mapped_by(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.split()[-1] for line in maps.splitlines() if " /dev/shm/" in line}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _started_analytics(edged: int, timeout: float = 30.0) -> tuple[list[int], set[str]]:
    """The children of edged (analytics process, resource tracker) and what they map."""
    deadline = time.monotonic() + timeout
    while True:
        children = _children(edged)
        shm = {name for child in children for name in _shm_mapped_by(child)}
        if len(children) >= 2 and any("/sem." not in name for name in shm):  # the frame ring
            return children, shm
        assert time.monotonic() < deadline, f"analytics did not start: {children} {shm}"
        time.sleep(0.2)


def _wait_gone(pids: list[int], paths: set[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _alive(p)]
        left = sorted(p for p in paths if Path(p).exists())
        if not alive and not left:
            return
        if time.monotonic() > deadline:
            # Do not leave them to the next test: the analytics process first, so that the
            # resource tracker, seeing it go, still removes what it tracks.
            for pid in sorted(alive, key=lambda p: "resource_tracker" in _cmdline(p)):
                os.kill(pid, signal.SIGKILL)
                time.sleep(1.0)
            raise AssertionError(f"left behind: processes {alive}, /dev/shm {left}")
        time.sleep(0.2)


def test_sigkilled_edged_leaves_no_child_and_no_shared_memory(
    tmp_path: Path, data_dir: Path
) -> None:
    config = write_config(
        tmp_path / "edge.toml",
        data_dir,
        extra=ANALYTICS + f'\n[control]\nsocket = "{tmp_path / "control.sock"}"\n',
    )
    with running_edged(config, tmp_path) as (proc, notify):
        notify.wait_for("READY=1", timeout=30)
        children, shm = _started_analytics(proc.pid)
        assert any(RING_PREFIX in name for name in shm)
        # No semaphore at all: edged and the analytics process share pipes only, nothing a
        # hostile child could hold (#11 item 21; there used to be the queues' semaphores).
        assert not any("/sem." in name for name in shm)
        proc.kill()
        proc.wait(timeout=10)
    _wait_gone(children, shm)


def test_next_start_removes_rings_of_a_dead_edged(tmp_path: Path, data_dir: Path) -> None:
    """SIGKILL of edged and all its helpers at once (the tracker cannot clean up): the next
    start removes the frame ring of the dead PID, and only that."""
    config = write_config(
        tmp_path / "edge.toml",
        data_dir,
        extra=ANALYTICS + f'\n[control]\nsocket = "{tmp_path / "control.sock"}"\n',
    )
    with running_edged(config, tmp_path) as (proc, notify):
        notify.wait_for("READY=1", timeout=30)
        children, shm = _started_analytics(proc.pid)
        for pid in [proc.pid, *children]:
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
    rings = {p for p in shm if RING_PREFIX in p}
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rings and all(Path(p).exists() for p in rings), "nothing left to clean: test is void"
    mine = SHM_DIR / f"{RING_PREFIX}{os.getpid()}-0123456789ab"
    mine.write_bytes(b"")  # the ring of a process that runs (this one): kept
    (tmp_path / "notify.sock").unlink()
    try:
        with running_edged(config, tmp_path, "--run-for", "3") as (proc, _notify):
            assert proc.wait(timeout=60) == 0
            assert proc.stderr is not None
            log = proc.stderr.read()
        assert "frame ring(s) left by a killed edged" in log
        assert not any(Path(p).exists() for p in rings)
        assert mine.exists()
    finally:
        mine.unlink()
        for path in shm - rings:  # multiprocessing's semaphores: its tracker was killed too
            Path(path).unlink(missing_ok=True)

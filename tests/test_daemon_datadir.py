"""A data directory edged cannot use: one clear line naming the path and the next step.

Each case on a real file system (needs root: tmpfs mounts, running edged as another user):
a read-only mount, a path that is a file, a directory of another owner, a full disk.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, require_root, tool
from .daemon_util import write_config


@pytest.fixture
def world_readable() -> Iterator[Path]:
    """A directory every user can read (pytest's own temporary tree is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="edge-datadir-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for mnt in sorted(path.rglob("*"), reverse=True):
            if mnt.is_dir() and os.path.ismount(mnt):
                subprocess.run([tool("umount"), "-l", str(mnt)], check=False)
        shutil.rmtree(path, ignore_errors=True)


def _mount_tmpfs(mnt: Path, options: str) -> Path:
    mnt.mkdir()
    subprocess.run([tool("mount"), "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], check=True)
    return mnt


def _fill(mnt: Path, leave: int = 0) -> None:
    """Fill the file system, then give back ``leave`` bytes."""
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    os.truncate(mnt / "filler", (mnt / "filler").stat().st_size - leave)


def _start(config: Path, *, user: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    as_user = []
    if user is not None:  # setpriv, not Popen(user=): the interpreter lives under /root
        as_user = [tool("setpriv"), f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    return subprocess.run(
        [*as_user, sys.executable, "-m", "edge.daemon", "--config", str(config), "--run-for", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def _assert_one_clear_line(result: subprocess.CompletedProcess[str], data: Path, step: str) -> None:
    assert result.returncode == 73, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(lines) == 1, result.stderr
    assert f"data directory {data} unusable:" in lines[0]
    assert step in lines[0]


@pytest.mark.parametrize("case", ["read-only", "file", "other-owner", "full", "nearly-full"])
def test_unusable_data_dir_is_one_line_and_a_next_step(case: str, world_readable: Path) -> None:
    require_root()
    base = world_readable
    user: int | None = None
    if case == "read-only":
        data = _mount_tmpfs(base / "ro", "ro,size=1m,mode=0755") / "data"
        step = "mounted read-only: remount it read-write"
    elif case == "file":
        data = base / "data"
        data.write_text("not a directory\n")
        step = "a file stands where a directory is needed"
    elif case == "other-owner":
        data = base / "data"
        data.mkdir(mode=0o700)  # root's; edged runs as nobody
        user = 65534
        step = "edged runs as uid 65534, which may not write there"
    else:
        mnt = _mount_tmpfs(base / "full", "size=512k,mode=0755")
        # Nearly full: room for the keys and the lock, not for a vault (whose index used to
        # be quarantined as "unusable" at every restart).
        _fill(mnt, leave=0 if case == "full" else 48 * 1024)
        data = mnt / "data"
        step = "no space left: free space on that file system"
    config = write_config(base / "edge.toml", data)
    for readable in (config, base / "csu", *(base / "csu").iterdir()):
        readable.chmod(0o755 if readable.is_dir() else 0o644)
    for _restart in range(2):  # every restart says the same, and nothing half-made blocks it
        _assert_one_clear_line(_start(config, user=user), data, step)

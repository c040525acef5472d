"""The shipped unit file as systemd itself judges it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .conftest import REPO, tool

UNIT = REPO / "edge" / "data" / "edged.service"


def test_unit_exposure_at_most_2(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    unit = tmp_path / "edged.service"
    shutil.copy(UNIT, unit)
    out = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for edged\.service: (\d+\.\d+)", out.stdout)
    assert match, out.stdout + out.stderr
    assert float(match.group(1)) <= 2.0, out.stdout


def test_unit_is_notify_with_watchdog() -> None:
    text = UNIT.read_text()
    assert "Type=notify" in text
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert "ReadWritePaths=/var/lib/edge" in text
    assert "NoNewPrivileges=yes" in text


def test_reload_checks_the_file_before_signalling(tmp_path: Path) -> None:
    """`systemctl reload edged` fails with the problems when the file is invalid, and the
    running edged is not disturbed: the check comes before the SIGHUP."""
    import sys

    reloads = re.findall(r"^ExecReload=(.*)$", UNIT.read_text(), re.M)
    assert len(reloads) == 2 and reloads[1] == "/bin/kill -HUP $MAINPID"
    check = reloads[0].split()
    assert check[:3] == ["/opt/edge/venv/bin/edgectl", "config", "check"]
    bad = tmp_path / "edge.toml"
    bad.write_text('[[analytics.cameras]]\ncamera = "cam1"\nface_blur = true\n')
    cmd = [sys.executable, "-m", "edge.cli.main", *check[1:-1], str(bad)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "face_model_path" in result.stderr
    # A good file is one edged starts with: its CSU key and its data directory too.
    from edge.config import RecipientKem
    from edge.vault.recipient_keys import write_keypair

    pub, _key = write_keypair(tmp_path / "csu", RecipientKem.MLKEM768_X25519)
    bad.write_text(
        f'[unit]\ndata_dir = "{tmp_path / "data"}"\n[vault]\ncsu_public_key = "{pub}"\n'
        '[[cameras]]\nid = "cam1"\n'
    )
    assert subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def test_the_output_guard_outlives_edged_under_systemd() -> None:
    """The guard is edged's child, in its control group. Under ``KillMode=mixed`` systemd would
    SIGKILL it as soon as edged's main process is gone (crash or stop), before it has put the
    outputs back to safe; under ``control-group`` it gets SIGTERM (which it answers by driving
    safe, tests/test_outputs_daemon.py) and is killed only ``TimeoutStopSec`` later, so its
    retries must end before that."""
    from edge.outputs import guard

    text = UNIT.read_text()
    assert re.findall(r"^KillMode=(\S+)$", text, re.M) == ["control-group"]
    [stop] = re.findall(r"^TimeoutStopSec=(\d+)$", text, re.M)
    assert int(stop) >= guard._PERSIST_S + 2

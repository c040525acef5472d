"""One writer per data directory, one owner per control socket: two real edged processes.

A technician starting ``edged`` by hand beside the service must be refused (naming the holder)
before the second process writes a byte of evidence or touches the first one's socket.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from edge import control
from edge.unitkeys import keys_dir_of, load_signing_public_key
from edge.vault import layout
from edge.vault.verify import verify_vault

from .daemon_util import running_edged, sealed_segments, write_config


def _with_socket(config: Path, sock: Path) -> Path:
    config.write_text(config.read_text() + f'\n[control]\nsocket = "{sock}"\n')
    return config


def _wait_for_segments(data: Path, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(sealed_segments(data)) < count:
        assert time.monotonic() < deadline, "edged recorded nothing"
        time.sleep(0.2)


def test_second_edged_on_the_same_data_dir_is_refused(tmp_path: Path, data_dir: Path) -> None:
    sock = tmp_path / "run" / "control.sock"
    config = _with_socket(write_config(tmp_path / "edge.toml", data_dir), sock)
    with running_edged(config, tmp_path) as (first, notify):
        notify.wait_for("READY=1", timeout=30)
        _wait_for_segments(data_dir, 1)
        before = {p: p.read_bytes() for p in sealed_segments(data_dir)}
        second = subprocess.run(
            [sys.executable, "-m", "edge.daemon", "--config", str(config), "--run-for", "5"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 73, second.stderr
        assert f"in use by another edged (pid {first.pid}" in second.stderr
        assert "systemctl stop edged" in second.stderr
        assert "Traceback" not in second.stderr
        # The first one still owns its socket and records on.
        assert control.call(sock, "status")["data_dir"] == str(data_dir)
        _wait_for_segments(data_dir, len(before) + 2)
        for path, raw in before.items():
            assert path.read_bytes() == raw, f"{path} rewritten"
        first.terminate()
        assert first.wait(timeout=30) == 0
    assert not sock.exists()
    public = load_signing_public_key(keys_dir_of(data_dir))
    report = verify_vault(layout.vault_dir(data_dir), public, device_id="test-unit")
    assert report.ok, [str(f) for f in report.findings]


def test_a_second_edged_never_takes_the_first_ones_control_socket(tmp_path: Path) -> None:
    """Another data directory (allowed) but the same socket path: the first keeps its socket."""
    sock = tmp_path / "run" / "control.sock"
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    config = _with_socket(write_config(tmp_path / "edge.toml", first_dir), sock)
    with running_edged(config, tmp_path) as (first, notify):
        notify.wait_for("READY=1", timeout=30)
        assert control.call(sock, "status")["data_dir"] == str(first_dir)
        second = subprocess.run(
            [sys.executable, "-m", "edge.daemon", "--config", str(config),
             "--data-dir", str(second_dir), "--run-for", "3"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert second.returncode == 0, second.stderr
        assert sealed_segments(second_dir), "the second instance records into its own directory"
        assert f"control socket {sock} is in use by another edged (pid {first.pid}" in (
            second.stderr
        )
        # Neither replaced nor removed by the second one, before or after it stopped.
        assert control.call(sock, "status")["data_dir"] == str(first_dir)
        first.terminate()
        assert first.wait(timeout=30) == 0
    assert not sock.exists()


def test_a_stale_socket_of_a_killed_edged_is_replaced(tmp_path: Path, data_dir: Path) -> None:
    """SIGKILL leaves the socket file and the lock files; the kernel dropped the locks."""
    sock = tmp_path / "run" / "control.sock"
    config = _with_socket(write_config(tmp_path / "edge.toml", data_dir), sock)
    with running_edged(config, tmp_path) as (first, notify):
        notify.wait_for("READY=1", timeout=30)
        first.kill()
        first.wait(timeout=10)
    assert sock.exists()
    (tmp_path / "notify.sock").unlink()
    with running_edged(config, tmp_path) as (second, notify):
        notify.wait_for("READY=1", timeout=30)
        assert control.call(sock, "status")["data_dir"] == str(data_dir)
        second.terminate()
        assert second.wait(timeout=30) == 0


def test_edgectl_export_and_verify_beside_a_running_edged_leave_its_vault_intact(
    tmp_path: Path, data_dir: Path
) -> None:
    """The tools that write while edged runs (an audit record each) are not a second writer:
    they read the index read-only and append to the audit log under its own flock."""
    config = _with_socket(write_config(tmp_path / "edge.toml", data_dir), tmp_path / "ctl.sock")
    edgectl = [sys.executable, "-m", "edge.cli.main"]
    with running_edged(config, tmp_path) as (proc, notify):
        notify.wait_for("READY=1", timeout=30)
        _wait_for_segments(data_dir, 2)
        for n in range(2):
            subprocess.run(
                [*edgectl, "export", "--config", str(config), "--last", "1h",
                 "--case", f"T-{n}", "--out", str(tmp_path / f"bundle-{n}")],
                check=True, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            subprocess.run(
                [*edgectl, "verify", "--config", str(config)],
                check=True, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        _wait_for_segments(data_dir, len(sealed_segments(data_dir)) + 1)
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    audit = subprocess.run(
        [*edgectl, "audit", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stderr
    actions = [line for line in audit.stdout.splitlines() if '"export"' in line]
    assert len(actions) == 2
    public = load_signing_public_key(keys_dir_of(data_dir))
    report = verify_vault(layout.vault_dir(data_dir), public, device_id="test-unit")
    assert report.ok, [str(f) for f in report.findings]

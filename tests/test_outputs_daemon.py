"""Cabinet outputs in a real edged, driving pymodbus's own server as the sign controller:
a unit alarm drives the sign through a playbook; ``kill -9`` of edged during the action
returns the sign to its safe state within the bound (the guard process); a SIGTERM does too,
audited; ``edgectl status`` shows the outputs, and a request waiting for an agent again after
edged was killed and started again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.identity import unitkeys
from edge.vault.audit import read_audit
from tests.daemon_util import running_edged, write_config
from tests.modbus_util import SignController, free_port, modbus_server

REGISTER = 20
#: The bound the city is promised: safe state this long after edged dies, at most.
SAFE_AFTER_CRASH_S = 1.0


@pytest.fixture
def sockdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="edge-out-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def unit_config(
    tmp_path: Path, data_dir: Path, sockdir: Path, port: int, confirmation: str = "immediate"
) -> Path:
    # cam2 is a network camera that never answers: after 5 s without a frame edged raises
    # "camera-lost", the event the playbook acts on (a real event of the unit, signed).
    return write_config(
        tmp_path / "edge.toml",
        data_dir,
        extra=f"""
[[cameras]]
id = "cam2"
source = "rtsp://127.0.0.1:{free_port()}/none"

[control]
socket = "{sockdir}/control.sock"

[[outputs]]
name = "sign-up"
meaning = "CAMERA FAULT panel at the crossing"
kind = "modbus"
states = {{ fault = 3 }}
[outputs.modbus]
host = "127.0.0.1"
port = {port}
state_register = {REGISTER}

[[playbooks]]
name = "camera-fault"
event = "camera-lost"
camera = "cam2"
output = "sign-up"
state = "fault"
duration_s = 120
confirmation = "{confirmation}"
""",
    )


def audit_records(data_dir: Path) -> list[dict[str, object]]:
    key = unitkeys.load_or_create_signing_key(unitkeys.keys_dir_of(data_dir)).public_key()
    records, problems = read_audit(data_dir / "vault" / "audit.log", key)
    assert problems == []
    return [{"action": r.action, "actor": r.actor, **r.details} for r in records]


def wait_driven(sign: SignController, timeout: float = 30.0) -> None:
    sign.wait_register(REGISTER, 3, timeout)


def outputs_status(config: Path) -> dict[str, Any]:
    """The outputs section of ``edgectl status --json``, as a technician would read it."""
    status = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "status", "--json", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return dict(json.loads(status.stdout)["daemon"]["outputs"])


def test_kill_9_during_an_action_returns_the_sign_to_safe_within_the_bound(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    with modbus_server() as sign:
        config = unit_config(tmp_path, data_dir, sockdir, sign.port)
        with running_edged(config, tmp_path) as (proc, notify):
            notify.wait_for("READY=1", timeout=30)
            wait_driven(sign)
            outputs = outputs_status(config)
            assert outputs["outputs"]["sign-up"]["state"] == "fault"
            assert outputs["outputs"]["sign-up"]["playbook"] == "camera-fault"
            guard_pid = outputs["guard_pid"]
            assert guard_pid is not None
            screen = subprocess.run(
                [sys.executable, "-m", "edge.cli.main", "status", "--config", str(config)],
                capture_output=True, text=True, timeout=60, check=False,
            ).stdout  # fmt: skip
            assert "OUTPUTS" in screen and "sign-up FAULT" in screen, screen
            # Nothing in the cabinet can be driven from the network: neither edged nor its
            # guard listens on any port (the controller is reached outward only).
            listeners = subprocess.run(
                ["ss", "-H", "-tulpn"], capture_output=True, text=True, check=True
            ).stdout
            for pid in (proc.pid, guard_pid):
                assert f"pid={pid}," not in listeners, listeners
            t0 = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            t_safe = sign.wait_register(REGISTER, 0, 10.0)
            proc.wait()
        crash_s = t_safe - t0
        print(f"safe state {crash_s * 1000:.1f} ms after kill -9 of edged")
        assert crash_s < SAFE_AFTER_CRASH_S
        # The guard has done its work and is gone; nothing of the unit holds the sign.
        deadline = time.monotonic() + 10
        while Path(f"/proc/{guard_pid}").exists():
            assert time.monotonic() < deadline, "the guard did not exit"
            time.sleep(0.05)
    driven = [r for r in audit_records(data_dir) if r["action"] == "output-driven"]
    assert driven and driven[0]["playbook"] == "camera-fault" and driven[0]["state"] == "fault"
    assert driven[0]["actor"] == "edged" and driven[0]["event"]


def test_edged_killed_under_systemd_the_guard_answers_sigterm_within_the_bound(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    """What systemd does when edged dies (``KillMode=control-group``, edged.service): SIGTERM
    to what is left of the control group at once, the guard included."""
    with modbus_server() as sign:
        config = unit_config(tmp_path, data_dir, sockdir, sign.port)
        with running_edged(config, tmp_path) as (proc, notify):
            notify.wait_for("READY=1", timeout=30)
            wait_driven(sign)
            guard_pid = outputs_status(config)["guard_pid"]
            t0 = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            os.kill(guard_pid, signal.SIGTERM)
            t_safe = sign.wait_register(REGISTER, 0, 10.0)
            proc.wait()
        assert t_safe - t0 < SAFE_AFTER_CRASH_S
        deadline = time.monotonic() + 10
        while Path(f"/proc/{guard_pid}").exists():
            assert time.monotonic() < deadline, "the guard did not exit after SIGTERM"
            time.sleep(0.05)


def test_a_stopped_edged_leaves_the_sign_safe_and_says_so_in_the_audit_log(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    with modbus_server() as sign:
        config = unit_config(tmp_path, data_dir, sockdir, sign.port)
        with running_edged(config, tmp_path) as (proc, notify):
            notify.wait_for("READY=1", timeout=30)
            wait_driven(sign)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            assert sign.register(REGISTER) == 0
    records = audit_records(data_dir)
    safe = [r for r in records if r["action"] == "output-safe"]
    assert [r["reason"] for r in safe] == ["edged started", "edged stopping"]


def test_a_request_waiting_when_edged_is_killed_is_in_the_status_of_the_next_edged(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    with modbus_server() as sign:
        config = unit_config(tmp_path, data_dir, sockdir, sign.port, confirmation="required")
        with running_edged(config, tmp_path) as (proc, notify):
            notify.wait_for("READY=1", timeout=30)
            deadline = time.monotonic() + 30
            while not (pending := outputs_status(config)["pending"]):
                assert time.monotonic() < deadline, "no request for camera-lost"
                time.sleep(0.2)
            event_id = pending[0]["event"]
            proc.send_signal(signal.SIGKILL)  # a crash: nothing is written on the way out
            proc.wait()
        assert sign.register(REGISTER) == 0
        second = tmp_path / "second"  # its own notification socket
        second.mkdir()
        with running_edged(config, second) as (proc, notify):
            notify.wait_for("READY=1", timeout=30)
            pending = outputs_status(config)["pending"]
            assert event_id in [p["event"] for p in pending], pending
            screen = subprocess.run(
                [sys.executable, "-m", "edge.cli.main", "status", "--config", str(config)],
                capture_output=True, text=True, timeout=60, check=False,
            ).stdout  # fmt: skip
            assert "camera-fault waits for an agent" in screen, screen
            assert sign.register(REGISTER) == 0  # waiting again, never driven by the restart
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    restored = [r for r in audit_records(data_dir) if r["action"] == "output-confirmation-restored"]
    assert [r["event"] for r in restored] == [event_id]
    assert not [r for r in audit_records(data_dir) if r["action"] == "output-driven"]

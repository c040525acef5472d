"""The update round trip on a real Raspberry Pi, through the firmware's tryboot (edge-rauc-tryboot).

The same round trip as tests/test_update_qemu.py, on the unit, as root, one step a run: each run
checks what the previous step left, does the next one and reboots the unit (in 10 s); run it
again once the unit is back (``/opt/edge/venv/bin/python -m pytest hw-tests/test_update_rpi.py``)
until it says the round trip is complete. The unit must be provisioned and recording.

Give two bundles of `make image TARGET=rpi`, signed by the city's update key, of versions above
the running one: ``EDGE_HW_UPDATE_GOOD`` (a healthy one) and ``EDGE_HW_UPDATE_BAD`` (a newer one
whose edged cannot start: build it from the same root with ``/opt/edge/venv/bin/edged`` replaced
by a script that exits 1, as the QEMU test does). Not applicable (skipped with the reason) on
anything but a Raspberry Pi image with the tryboot backend, or without the two bundles.

1. install GOOD: tryboot.txt names the other slot's command line, the reboot is a tryboot;
2. running GOOD on the other slot, confirmed (RAUC: good; slot.txt names it); install BAD;
3. BAD's single try fails (edge-update-confirm.service reboots, an ordinary boot): the unit runs
   GOOD again on its own; ``edgectl status`` says rolled back and why; the vault recorded before
   step 1 verifies. Printed: bundle size, install time, reboot into the new slot, roll-back time.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from edge.slots import read_running_slot
from tests.conftest import not_applicable

STATE = Path("/var/lib/edge-hwtest/update-round-trip.json")
FIRMWARE = Path("/boot/firmware")
BACKEND = Path("/usr/lib/edge/edge-rauc-tryboot")
EDGECTL = "/opt/edge/venv/bin/edgectl"
CONFIRM_WAIT_S = 600.0


def _run(*cmd: str, timeout: float = 3600.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _json(*cmd: str) -> Any:
    out = _run(*cmd)
    assert out.returncode == 0, f"{' '.join(cmd)}: {out.stderr}"
    return json.loads(out.stdout)


def _requirements() -> tuple[Path, Path]:
    try:
        model = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00 \n")
    except OSError:
        not_applicable("not a Raspberry Pi (/proc/device-tree/model does not exist)")
    if not model.startswith("Raspberry Pi"):
        not_applicable(f"not a Raspberry Pi ({model})")
    if not BACKEND.exists() or not (FIRMWARE / "slot.txt").exists():
        not_applicable("this image has no tryboot backend (an image older than edge-rauc-tryboot)")
    if os.geteuid() != 0:
        not_applicable("the round trip installs and reboots: run it as root")
    paths = [os.environ.get(name, "") for name in ("EDGE_HW_UPDATE_GOOD", "EDGE_HW_UPDATE_BAD")]
    if not all(paths) or not all(Path(p).is_file() for p in paths):
        not_applicable("give EDGE_HW_UPDATE_GOOD and EDGE_HW_UPDATE_BAD (bundle files)")
    return Path(paths[0]), Path(paths[1])


def _version_of(bundle: Path) -> str:
    return str(_json("rauc", "info", "--output-format=json", str(bundle))["version"])


def _update_status() -> dict[str, Any]:
    doc: dict[str, Any] = _json(EDGECTL, "update", "status", "--json")
    return doc


def _confirmation_done() -> str:
    """edge-update-confirm.service's result once it has run this boot."""
    deadline = time.monotonic() + CONFIRM_WAIT_S
    while time.monotonic() < deadline:
        state = _run("systemctl", "show", "-P", "ActiveState", "edge-update-confirm.service")
        if state.stdout.strip() in ("inactive", "failed", "active"):
            result = _run("systemctl", "show", "-P", "Result", "edge-update-confirm.service")
            if _run("systemctl", "show", "-P", "ExecMainExitTimestampMonotonic",
                    "edge-update-confirm.service").stdout.strip() not in ("", "0"):  # fmt: skip
                return result.stdout.strip()
        time.sleep(2)
    raise AssertionError("edge-update-confirm.service did not finish")


def _vault() -> tuple[bool, int]:
    out = _run(EDGECTL, "verify", "--json")
    doc = json.loads(out.stdout)
    return bool(doc["ok"]), sum(int(c["segments_ok"]) for c in doc["cameras"].values())


def _booted_at() -> float:
    return time.time() - float(Path("/proc/uptime").read_text().split()[0])


def _confirmed_at() -> float:
    mono = _run("systemctl", "show", "-P", "ExecMainExitTimestampMonotonic",
                "edge-update-confirm.service").stdout.strip()  # fmt: skip
    return _booted_at() + int(mono or 0) / 1e6


def _install(bundle: Path) -> float:
    started = time.monotonic()
    done = _run(EDGECTL, "update", "install", str(bundle))
    assert done.returncode == 0, done.stdout + done.stderr
    return time.monotonic() - started


def _reboot_soon(state: dict[str, Any]) -> None:
    state["reboot_requested_at"] = time.time()
    STATE.parent.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state))
    # systemctl reboot keeps the tryboot parameter the backend left in /run/systemd.
    _run("systemd-run", "--on-active=10", "systemctl", "reboot")
    print(f"\nstep done ({state['step']} next): the unit reboots in 10 s; run this test again")


def test_update_round_trip_through_tryboot() -> None:
    good, bad = _requirements()
    state: dict[str, Any] = json.loads(STATE.read_text()) if STATE.exists() else {"step": "start"}
    running = _update_status()
    if state["step"] == "start":
        ok, segments = _vault()
        assert ok and segments > 0, "the unit must be provisioned and recording"
        state.update(
            slot=running["slot"], version=running["version"], segments=segments,
            good=_version_of(good), bad=_version_of(bad), bundle_bytes=good.stat().st_size,
        )  # fmt: skip
        state["install_s"] = _install(good)
        other = "cmdline-b.txt" if running["slot"] == "A" else "cmdline.txt"
        assert f"cmdline={other}" in (FIRMWARE / "tryboot.txt").read_text()
        assert "tryboot" in Path("/run/systemd/reboot-param").read_text()
        state["step"] = "good"
        _reboot_soon(state)
        return
    if state["step"] == "good":
        assert _confirmation_done() == "success"
        assert running["version"] == state["good"] and running["slot"] != state["slot"], running
        assert (running["last_update"] or {}).get("result") == "good", running
        assert read_running_slot() == running["slot"]
        rauc = _json("rauc", "status", "--output-format=json")
        assert rauc["booted"] == running["slot"]
        state["reboot_into_new_slot_s"] = _confirmed_at() - state["reboot_requested_at"]
        state["good_slot"] = running["slot"]
        state["bad_install_started_at"] = time.time()
        _install(bad)
        state["step"] = "rolled-back"
        _reboot_soon(state)
        return
    assert state["step"] == "rolled-back", state
    assert _confirmation_done() == "success"
    assert running["version"] == state["good"] and running["slot"] == state["good_slot"], running
    last = running["last_update"] or {}
    assert last.get("result") == "rolled-back" and "edged not ready" in last.get("reason", ""), last
    report = _json(EDGECTL, "status", "--json")
    findings = [f for f in report["findings"] if f["section"] == "update"]
    assert findings and findings[0]["level"] == "WARN", report["findings"]
    assert f"update to {state['bad']} rolled back" in findings[0]["summary"]
    ok, segments = _vault()
    assert ok and segments >= state["segments"], (ok, segments, state["segments"])
    figures = {
        "bundle_bytes": state["bundle_bytes"],
        "install_s": round(state["install_s"], 1),
        "reboot_into_new_slot_s": round(state["reboot_into_new_slot_s"], 1),
        "rollback_s": round(_confirmed_at() - state["bad_install_started_at"], 1),
    }
    print(f"\nupdate round trip (Raspberry Pi, tryboot): {json.dumps(figures)}")
    STATE.unlink()

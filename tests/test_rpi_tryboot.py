"""The Raspberry Pi's boot loader backend (``edge-rauc-tryboot``, the firmware's tryboot) as a
real RAUC service drives it: install makes the new slot the next *tryboot* only (tryboot.txt,
``0 tryboot`` as the reboot parameter), the confirmed slot stays in config.txt's slot.txt until
``rauc status mark-good`` runs on the new slot; after a failed try the unit is back on the
previous slot by the firmware's own doing, and ``mark-bad other`` forgets the try.

The firmware partition is a folder built from image/layout.py as image/seal.py writes it; the
firmware's reading of config.txt or tryboot.txt is the Pi's (hw-tests/test_update_rpi.py).
Default tier: a RAUC service on a private bus, slots in files, seconds.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from image import layout

from .conftest import REPO, tool
from .test_update import Rig, running_rauc_service

SCRIPT = REPO / "ansible" / "roles" / "edge_daemon" / "files" / "edge-rauc-tryboot"
GIB = 1 << 30


class Pi:
    """A firmware partition (folder), the backend's state and /run, and RAUC's system.conf."""

    def __init__(self, rig: Rig) -> None:
        tmp = rig.tmp
        self.fw = tmp / "firmware"
        self.fw.mkdir()
        plan = layout.plan(layout.TARGETS["rpi"], GIB, GIB, 256 * layout.MIB, "rpi:1")
        (self.fw / "config.txt").write_text(layout.rpi_config_txt())
        (self.fw / "slot.txt").write_text("cmdline=cmdline.txt\n")
        self.cmdlines = layout.rpi_cmdlines(plan)
        for name, text in self.cmdlines.items():
            (self.fw / name).write_text(text)
        self.reboot_param = tmp / "run" / "reboot-param"
        self.state = tmp / "boot-state"
        backend = tmp / "backend"
        backend.write_text(
            "#!/bin/sh\n"
            f"export EDGE_TRYBOOT_FIRMWARE={self.fw} EDGE_TRYBOOT_STATE={self.state} "
            f"EDGE_TRYBOOT_REBOOT_PARAM={self.reboot_param}\n"
            f'exec {SCRIPT} "$@"\n'
        )
        backend.chmod(0o755)
        self.conf = tmp / "system-rpi.conf"
        self.conf.write_text(
            rig.conf.read_text()
            .replace("bootloader=noop", "bootloader=custom")
            .replace("[keyring]", f"[handlers]\nbootloader-custom-backend={backend}\n\n[keyring]")
        )
        self.rig = rig

    def booted(self, slot: str) -> str:
        """The kernel command line the firmware gives slot ``slot``; a new boot empties /run."""
        self.reboot_param.unlink(missing_ok=True)
        return self.cmdlines[layout.RPI_CMDLINE_FILES[slot]].strip()

    def rauc(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("rauc"), f"--conf={self.conf}", *args],
            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", **env},
            timeout=120, check=False,
        )  # fmt: skip

    def status(self, env: dict[str, str]) -> dict[str, Any]:
        out = self.rauc(env, "status", "--output-format=json", "--detailed")
        assert out.returncode == 0, out.stderr
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    def confirmed(self) -> str:
        return (self.fw / "slot.txt").read_text().strip()


@pytest.fixture
def pi(tmp_path: Path) -> Pi:
    return Pi(Rig(tmp_path))


def _boot_status(doc: dict[str, Any], name: str) -> str:
    for slot in doc["slots"]:
        if name in slot:
            return str(slot[name].get("boot_status"))
    raise AssertionError(doc)


def _installed_into_b(pi: Pi) -> None:
    bundle = pi.rig.bundle("99.0.0", fmt="plain")
    with running_rauc_service(pi.rig.tmp, pi.conf, pi.booted("A")) as env:
        done = pi.rauc(env, "install", str(bundle))
        assert done.returncode == 0, done.stdout + done.stderr
        assert pi.status(env)["boot_primary"] == "rootfs.1"
    # One try of B: tryboot.txt is config.txt naming B's command line; the next reboot is a
    # tryboot; an ordinary boot still starts A.
    tryboot = (pi.fw / "tryboot.txt").read_text().splitlines()
    config = (pi.fw / "config.txt").read_text().splitlines()
    assert tryboot == [ln for ln in config if ln != "include slot.txt"] + ["cmdline=cmdline-b.txt"]
    assert pi.reboot_param.read_text().strip() == "0 tryboot"
    assert pi.confirmed() == "cmdline=cmdline.txt"
    assert "rauc.slot=B" in (pi.fw / "cmdline-b.txt").read_text()


def test_install_tries_the_new_slot_once_and_mark_good_keeps_it(pi: Pi) -> None:
    _installed_into_b(pi)
    # The tryboot: B runs, healthy, and is confirmed.
    with running_rauc_service(pi.rig.tmp, pi.conf, pi.booted("B")) as env:
        good = pi.rauc(env, "status", "mark-good")
        assert good.returncode == 0, good.stderr
        doc = pi.status(env)
    assert doc["booted"] == "B" and doc["boot_primary"] == "rootfs.1", doc
    assert _boot_status(doc, "rootfs.1") == "good"
    assert pi.confirmed() == "cmdline=cmdline-b.txt"
    assert not (pi.fw / "tryboot.txt").exists() and not pi.reboot_param.exists()


def test_a_failed_try_is_back_on_the_previous_slot_and_forgotten(pi: Pi) -> None:
    _installed_into_b(pi)
    # B's try failed (edge-update-confirm.service rebooted: an ordinary reboot): A booted.
    with running_rauc_service(pi.rig.tmp, pi.conf, pi.booted("A")) as env:
        assert pi.status(env)["booted"] == "A"
        bad = pi.rauc(env, "status", "mark-bad", "other")
        assert bad.returncode == 0, bad.stderr
        good = pi.rauc(env, "status", "mark-good")
        assert good.returncode == 0, good.stderr
        doc = pi.status(env)
    assert doc["boot_primary"] == "rootfs.0", doc
    assert _boot_status(doc, "rootfs.1") == "bad" and _boot_status(doc, "rootfs.0") == "good"
    assert pi.confirmed() == "cmdline=cmdline.txt"
    assert not (pi.fw / "tryboot.txt").exists()


def test_the_backend_refuses_what_it_does_not_know(pi: Pi) -> None:
    for args in (["set-primary", "C"], ["set-state", "A", "maybe"], ["reinstall"]):
        proc = subprocess.run(
            [str(SCRIPT), *args], capture_output=True, text=True, check=False,
            env={"PATH": "/usr/bin:/bin", "EDGE_TRYBOOT_FIRMWARE": str(pi.fw),
                 "EDGE_TRYBOOT_STATE": str(pi.state),
                 "EDGE_TRYBOOT_REBOOT_PARAM": str(pi.reboot_param)},
        )  # fmt: skip
        assert proc.returncode == 1 and "edge-rauc-tryboot:" in proc.stderr, (args, proc)
    assert pi.confirmed() == "cmdline=cmdline.txt" and not (pi.fw / "tryboot.txt").exists()

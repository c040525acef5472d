"""Helpers of the image tests: run image/build.py stages, boot an image under QEMU, read its report.

The root file system tarball is cached under image/cache/ (keyed on the package list), so only
the first run on a machine pays for mmdebstrap; everything else is built in a temporary folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from image import layout as layout
from tests.conftest import REPO

IMAGE = REPO / "image"

BUILD = [str(REPO / ".venv" / "bin" / "python"), str(IMAGE / "build.py")]
RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


@dataclass
class Recap:
    ok: int
    changed: int
    failed: int
    log: str


def build_stage(
    target: str,
    stage: str,
    out: Path,
    timeout: float = 1800,
    env_extra: dict[str, str] | None = None,
) -> str:
    """Run one stage of image/build.py with its output under ``out``; returns stdout+stderr."""
    env = dict(os.environ, EDGE_IMAGE_OUT=str(out), **(env_extra or {}))
    proc = subprocess.run(
        [*BUILD, "--target", target, "--stage", stage],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"image stage {stage} failed:\n{output[-6000:]}"
    return output


def provision(target: str, out: Path, env_extra: dict[str, str] | None = None) -> Recap:
    output = build_stage(target, "provision", out, env_extra=env_extra)
    line = next(ln for ln in output.splitlines() if ln.startswith("PROVISION-RECAP"))
    match = RECAP.search(line)
    assert match, line
    ok, changed, _unreachable, failed = (int(g) for g in match.groups())
    return Recap(ok=ok, changed=changed, failed=failed, log=output)


@dataclass
class BootReport:
    """What edge-selfcheck printed on the serial console, and how the machine ended."""

    facts: dict[str, list[str]] = field(default_factory=dict)
    finished: bool = False
    powered_off: bool = False
    seconds: float = 0.0
    console: str = ""

    def one(self, name: str) -> str:
        values = self.facts.get(name, [])
        assert len(values) == 1, f"{name}: {values}\n{self.console[-4000:]}"
        return values[0]


def parse_selfcheck(console: str) -> BootReport:
    report = BootReport(console=console)
    # Console lines carry the kernel time and the unit name before the self-check's text.
    for line in console.splitlines():
        if "EDGE-SELFCHECK-END" in line:
            report.finished = True
        elif "EDGE-SELFCHECK " in line:
            name, _, value = line.split("EDGE-SELFCHECK ", 1)[1].partition(":")
            report.facts.setdefault(name.strip(), []).append(value.strip())
    return report


def boot(target_name: str, out: Path, timeout: float, grow: int = 1024 * layout.MIB) -> BootReport:
    """Boot the sealed image until it powers off.

    The disk is a copy-on-write overlay (the image stays pristine) ``grow`` bytes larger than
    the image, like a card larger than the image: first boot should grow the data partition.
    """
    target = layout.TARGETS[target_name]
    serial = out / "serial.log"
    serial.unlink(missing_ok=True)
    image = out / f"edge-{target_name}.img"
    overlay = out / "boot-overlay.qcow2"
    overlay.unlink(missing_ok=True)
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            str(image),
            str(overlay),
            str(image.stat().st_size + grow),
        ],
        check=True,
    )
    cmdline = (out / "cmdline.txt").read_text().strip()
    cmd = [
        *target.qemu,
        "-accel",
        "tcg,thread=multi",
        "-m",
        "2048",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-kernel",
        str(out / "vmlinuz"),
        "-initrd",
        str(out / "initrd.img"),
        "-append",
        f"{cmdline} systemd.wants=edge-selfcheck.service edge.selfcheck=poweroff",
        "-drive",
        f"file={overlay},format=qcow2,if=virtio",
        # restrict=on: the guest reaches nothing beyond QEMU's own DHCP server.
        "-netdev",
        "user,id=n0,restrict=on",
        "-device",
        "virtio-net-pci,netdev=n0,romfile=",
        "-serial",
        f"file:{serial}",
        # A hardware watchdog (Intel 6300ESB, driver i6300esb) for systemd to arm: with
        # -no-reboot, a unit it resets ends the run instead of booting again.
        *(["-device", "i6300esb"] if target_name == "qemu-amd64" else []),
    ]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        proc.wait(timeout=timeout)
        powered_off = proc.returncode == 0
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        powered_off = False
    overlay.unlink(missing_ok=True)
    report = parse_selfcheck(serial.read_text(errors="replace") if serial.exists() else "")
    report.powered_off = powered_off
    report.seconds = time.monotonic() - started
    return report


LISTEN = re.compile(r"^(?P<proto>tcp|udp)\s+\S+\s+\d+\s+\d+\s+(?P<local>\S+)\s+")


def listening_ports(lines: list[str]) -> set[tuple[str, int]]:
    """(protocol, port) of each `ss -H -tulnp` line."""
    ports = set()
    for line in lines:
        match = LISTEN.match(line)
        assert match, line
        ports.add((match["proto"], int(match["local"].rsplit(":", 1)[1])))
    return ports

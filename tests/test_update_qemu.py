"""The update round trip on the qemu-amd64 image, under QEMU (TCG), through its own boot loader.

Slow tier (``-m slow``), root only. The image is built with the city's update keyring (a real
city CA and update signer, ``edge-csu ca``) and without a unit id in its baseline; QEMU starts
the image's GRUB (``edge-boot.lnx``) and reboots the machine whenever the unit asks, so every
slot switch and every roll-back is the boot loader's own doing. A driver baked into the test
image (``tests/update_roundtrip/``) plays the installer, one step a boot:

1. slot A, fresh: ``edgectl provision``, wait for recordings, ``edgectl update install`` a
   bundle of a newer version (from the same root, signed by the city), reboot;
2. slot B, the new version, confirmed by edge-update-confirm.service (RAUC: good, booted):
   install a newer bundle whose edged cannot start (into slot A), reboot;
3. slot A, edged broken: the confirmation fails, systemd reboots; the boot loader tries it once
   more, then goes back to slot B on its own;
4. slot B again: ``edgectl status`` shows the roll-back and why; the vault recorded before the
   first update verifies; power off.

Refusals (unsigned, foreign key, flipped byte, downgrade) are judged in tests/test_update.py.
Measured and printed: bundle size, install time, reboot into the new slot, roll-back time.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from edge import __version__
from edge.csu.ca import VideoCA
from image import bundle as image_bundle
from image import layout
from tests import image_util
from tests.conftest import REPO, require_root, tool
from tests.test_update import cli

pytestmark = pytest.mark.slow

TARGET = "qemu-amd64"
DRIVER = Path(__file__).parent / "update_roundtrip"
GOOD, BAD = "99.1.0", "99.2.0"  # above any version this repository will carry for a while
ROUND_TRIP_TIMEOUT_S = 3600.0


@dataclass
class Console:
    """The serial console as it arrives: each line with the time (s) it was first seen."""

    path: Path
    lines: list[tuple[float, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def follow(self, stop: threading.Event) -> None:
        pos, pending = 0, ""
        while not stop.is_set():
            if self.path.exists():
                with self.path.open("rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos += len(chunk)
                pending += chunk.decode(errors="replace")
                *done, pending = pending.split("\n")
                now = time.monotonic() - self.started
                self.lines += [(now, ln.replace("\r", "")) for ln in done]
            time.sleep(0.5)

    def facts(self, name: str) -> list[tuple[float, str]]:
        out = []
        for at, line in self.lines:
            if f"EDGE-RT {name}: " in line:
                out.append((at, line.split(f"EDGE-RT {name}: ", 1)[1].strip()))
        return out

    def first(self, name: str, value_pattern: str = "") -> tuple[float, str]:
        for at, value in self.facts(name):
            if re.search(value_pattern, value):
                return at, value
        raise AssertionError(f"no {name!r} matching {value_pattern!r}:\n{self.tail()}")

    def boots(self) -> list[tuple[float, str]]:
        return [(at, ln.split("edge-boot: ", 1)[1]) for at, ln in self.lines if "edge-boot: " in ln]

    def tail(self, n: int = 120) -> str:
        return "\n".join(ln for _, ln in self.lines[-n:])


def _city_vars(folder: Path, keyring: bytes) -> Path:
    """The profile's unit configuration without its unit id (each unit is provisioned on
    site), and the city's update keyring."""
    profile = yaml.safe_load((REPO / "image" / "profiles" / "qemu.yml").read_text())
    toml = re.sub(r'(?m)^id = "edge-qemu"\n', "", profile["edge_daemon_config_toml"])
    assert "edge-qemu" not in toml
    city = folder / "city.yml"
    city.write_text(
        json.dumps(
            {"edge_daemon_config_toml": toml, "edge_daemon_update_keyring": keyring.decode()}
        )
    )
    return city


def _site_packages(root: Path) -> Path:
    (found,) = root.glob("opt/edge/venv/lib/python3*/site-packages/edge")
    return found


def _set_version(root: Path, version: str) -> None:
    """The unit's edge package reports ``version`` (what ``edgectl update`` compares)."""
    init = _site_packages(root) / "__init__.py"
    text = init.read_text()
    assert re.search(r'__version__ = "[^"]+"', text), text
    init.write_text(re.sub(r'__version__ = "[^"]+"', f'__version__ = "{version}"', text))
    for cached in (init.parent / "__pycache__").glob("__init__.*.pyc"):
        cached.unlink()


def _root_bundle(
    root: Path, size: int, version: str, work: Path, signer: tuple[Path, Path]
) -> Path:
    """A signed bundle of ``root`` as it is now, built as make image builds its own."""
    img = work / f"root-{version}.ext4"
    with img.open("wb") as f:
        f.truncate(size)
    subprocess.run(
        [tool("mkfs.ext4"), "-q", "-F", "-L", layout.ROOT_A_LABEL, "-E", "root_owner=0:0",
         "-O", "^orphan_file", "-d", str(root), str(img)],
        check=True,
    )  # fmt: skip
    out = image_bundle.build_bundle(
        img, work / "bundles" / f"{version}.raucb", target_name=TARGET, version=version,
        cert=signer[0], key=signer[1],
    )  # fmt: skip
    img.unlink()
    return out


@dataclass
class Rig:
    out: Path  # the image's output folder
    bundles: Path  # the second disk: good.raucb, bad.raucb
    sizes: dict[str, int]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    require_root()
    for name in ("mmdebstrap", "mkfs.ext4", "sfdisk", "bmaptool", "qemu-system-x86_64",
                 "grub-mkimage", "rauc", "mksquashfs"):  # fmt: skip
        tool(name)
    base = tmp_path_factory.mktemp("update-qemu")
    ca_dir = base / "ca"
    ca = VideoCA.init(ca_dir)
    made = cli("edge.csu.main", "ca", "issue", str(ca_dir), "city-update", "--profile", "update",
               "--out", str(base / "city-update"))  # fmt: skip
    assert made.returncode == 0, made.stderr
    signer = (base / "city-update.crt", base / "city-update.key")
    # The bundles are made below from the same root, as make image makes its own (with
    # EDGE_UPDATE_CERT/KEY): not once more here.
    env = {"EDGE_IMAGE_VARS": str(_city_vars(base, ca.chain_pem))}
    images = base / "image"
    out = images / TARGET
    image_util.build_stage(TARGET, "unpack", images)
    image_util.build_stage(TARGET, "wheels", images, env_extra=env)
    recap = image_util.provision(TARGET, images, env_extra=env)
    assert recap.failed == 0, recap.log[-3000:]
    root = out / "root"
    # The test image's driver, enabled (never in a city's image).
    (root / "usr/lib/edge-test").mkdir(parents=True)
    shutil.copy(DRIVER / "edge-roundtrip", root / "usr/lib/edge-test/edge-roundtrip")
    shutil.copy(DRIVER / "edge-roundtrip.service", root / "etc/systemd/system/")
    (root / "etc/systemd/system/multi-user.target.wants/edge-roundtrip.service").symlink_to(
        "/etc/systemd/system/edge-roundtrip.service"
    )
    image_util.build_stage(TARGET, "seal", images, env_extra=env)
    manifest = json.loads((out / f"edge-{TARGET}.manifest.json").read_text())
    slot_size = next(p["size"] for p in manifest["partitions"] if p["label"] == "edge-root-a")
    work = base / "bundles-work"
    (work / "bundles").mkdir(parents=True)
    _set_version(root, GOOD)
    good = _root_bundle(root, slot_size, GOOD, work, signer)
    _set_version(root, BAD)
    edged = root / "opt/edge/venv/bin/edged"
    edged.unlink()
    edged.write_text("#!/bin/sh\necho 'edged: broken on purpose (update round trip)' >&2\nexit 1\n")
    edged.chmod(0o755)
    bad = _root_bundle(root, slot_size, BAD, work, signer)
    shutil.move(good, work / "bundles" / "good.raucb")
    shutil.move(bad, work / "bundles" / "bad.raucb")
    sizes = {
        "good": (work / "bundles" / "good.raucb").stat().st_size,
        "bad": (work / "bundles" / "bad.raucb").stat().st_size,
    }
    disk = base / "bundles.img"
    with disk.open("wb") as f:
        f.truncate(sizes["good"] + sizes["bad"] + (128 << 20))
    subprocess.run(
        [tool("mkfs.ext4"), "-q", "-F", "-L", "rt-bundles", "-d", str(work / "bundles"), str(disk)],
        check=True,
    )
    shutil.rmtree(root)  # the bundles are made: gigabytes back
    yield Rig(out, disk, sizes)
    shutil.rmtree(base, ignore_errors=True)


def _run_round_trip(rig: Rig) -> tuple[Console, int | None]:
    target = layout.TARGETS[TARGET]
    image = rig.out / f"edge-{TARGET}.img"
    overlay = rig.out / "round-trip.qcow2"
    subprocess.run(
        [tool("qemu-img"), "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image),
         str(overlay), str(image.stat().st_size + (4 << 30))],
        check=True,
    )  # fmt: skip
    console = Console(rig.out / "round-trip-serial.log")
    console.path.unlink(missing_ok=True)
    cmd = [
        *target.qemu, "-accel", "tcg,thread=multi", "-m", "2048", "-display", "none",
        "-monitor", "none",
        # The image's own boot loader; no -no-reboot: every reboot goes through GRUB again.
        "-kernel", str(rig.out / "edge-boot.lnx"),
        "-drive", f"file={overlay},format=qcow2,if=virtio",
        "-drive", f"file={rig.bundles},format=raw,if=virtio,readonly=on",
        "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,romfile=",
        "-serial", f"file:{console.path}",
    ]  # fmt: skip
    stop = threading.Event()
    reader = threading.Thread(target=console.follow, args=(stop,), daemon=True)
    reader.start()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        code: int | None = proc.wait(timeout=ROUND_TRIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    time.sleep(1.5)
    stop.set()
    reader.join()
    overlay.unlink(missing_ok=True)
    return console, code


def test_install_reboot_confirm_then_a_broken_update_rolls_back_on_its_own(rig: Rig) -> None:
    console, code = _run_round_trip(rig)
    tail = console.tail()
    assert code == 0, f"QEMU did not power off (exit {code}):\n{tail}"
    boots = console.boots()
    print("\nboot loader:\n" + "\n".join(f"  {at:7.0f} s  {what}" for at, what in boots))
    # 1. Slot A, the flashed version: provisioned, recording, the newer bundle installed.
    _, first = console.first("boot", r"^slot=A")
    assert f"version={__version__}" in first and "last=none" in first, tail
    assert console.first("provision")[1].startswith("rc=0"), tail
    vault_before = console.first("vault-before")[1]
    assert vault_before.startswith("ok ") and int(vault_before.split()[1]) >= 3, vault_before
    t_install, _ = console.first("install-good", "^start$")
    t_installed, said = console.first("install-good", "^rc=")
    assert said == "rc=0", "\n".join(v for _, v in console.facts("install-good-log"))
    logged = " ".join(v for _, v in console.facts("install-good-log"))
    took = re.search(r"installed 99\.1\.0 into the inactive slot in ([\d.]+) s", logged)
    assert took, logged
    rauc_after_install = console.facts("rauc")[1][1]
    assert "primary=rootfs.1" in rauc_after_install, rauc_after_install
    t_reboot = console.first("reboot")[0]
    # 2. Slot B, the new version, confirmed: RAUC says good and booted.
    t_new, second = console.first("boot", r"^slot=B version=99\.1\.0")
    assert "last=good" in second and "confirm=success" in second, second
    rauc_b = next(v for at, v in console.facts("rauc") if at > t_new)
    assert "booted=B" in rauc_b and "rootfs.1=booted/good" in rauc_b, rauc_b
    # 3. The broken version into slot A; the boot loader tries it, then goes back on its own.
    t_bad, _ = console.first("install-bad", "^start$")
    assert console.first("install-bad", "^rc=")[1] == "rc=0", tail
    later = [what for at, what in boots if at > t_bad]
    tries = [w for w in later if w.startswith("slot A attempt")]
    assert [w.split(" (")[0] for w in tries] == ["slot A attempt 1 of 2", "slot A attempt 2 of 2"]
    assert later[-1].startswith("slot B attempt 1 of 2"), later
    # 4. Back on slot B: the roll-back and its reason, the vault of before intact.
    t_back, _ = console.first("boot", r"^slot=B version=99\.1\.0 last=rolled-back")
    assert t_back > t_bad
    figures = {
        "bundle_bytes": rig.sizes["good"],
        "install_s_in_unit": float(took.group(1)),
        "install_s_console": round(t_installed - t_install, 1),
        "reboot_into_new_slot_confirmed_s": round(t_new - t_reboot, 1),
        "rollback_s_from_bad_install_to_old_slot_running": round(t_back - t_bad, 1),
        "round_trip_total_s": round(console.lines[-1][0], 1),
    }
    print("update round trip (TCG): " + json.dumps(figures))
    status = console.first("status-update")[1]
    level, summary, action = (s.strip() for s in status.split("|", 2))
    assert level == "WARN", status
    assert summary == "update to 99.2.0 rolled back: running 99.1.0", status
    assert "not the installed 99.2.0" in action and "edged not ready" in action, action
    final_rauc = next(v for at, v in console.facts("rauc") if at >= t_back)
    assert "rootfs.0=inactive/bad" in final_rauc and "rootfs.1=booted/good" in final_rauc, (
        final_rauc
    )
    vault_after = console.first("vault-after")[1]
    assert vault_after.startswith("ok "), vault_after
    assert int(vault_after.split()[1]) >= int(vault_before.split()[1]), (vault_before, vault_after)
    audit = console.first("audit")[1].split()
    for action_name in ("update-installed", "update-marked-good", "update-not-confirmed",
                        "update-rolled-back"):  # fmt: skip
        assert action_name in audit, audit
    assert console.first("end")[1] == "done"

"""The image layout (image/layout.py): partition plans, kernel command lines, Pi boot files.

Pure functions checked without building anything; sfdisk judges the partition tables.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from image import layout
from tests.conftest import require_root, tool
from tests.image_util import BUILD

GIB = 1024 * layout.MIB


@pytest.mark.parametrize("name", sorted(layout.TARGETS))
def test_plan_has_two_equal_root_slots_and_a_data_partition(name: str) -> None:
    target = layout.TARGETS[name]
    plan = layout.plan(
        target,
        root_bytes=700 * layout.MIB,
        data_bytes=512 * layout.MIB,
        firmware_bytes=256 * layout.MIB,
        seed="s",
    )
    labels = [p.label for p in plan.partitions]
    expected = [layout.ROOT_A_LABEL, layout.ROOT_B_LABEL, layout.DATA_LABEL]
    assert labels == ([layout.FIRMWARE_LABEL] if target.firmware else []) + expected
    roots = [p for p in plan.partitions if p.label.startswith("edge-root")]
    assert roots[0].size == roots[1].size >= 700 * layout.MIB
    offsets = plan.offsets()
    assert all(o % layout.MIB == 0 for o in offsets)
    assert offsets == sorted(offsets)
    assert plan.disk_size > offsets[-1] + plan.partitions[-1].size


def test_plan_is_a_function_of_its_inputs() -> None:
    target = layout.TARGETS["qemu-amd64"]
    one = layout.plan(target, GIB, GIB, 0, "qemu-amd64:100")
    assert one == layout.plan(target, GIB, GIB, 0, "qemu-amd64:100")
    other = layout.plan(target, GIB, GIB, 0, "qemu-amd64:101")
    assert one.disk_id != other.disk_id
    assert {p.uuid for p in one.partitions}.isdisjoint({p.uuid for p in other.partitions})


@pytest.mark.parametrize("name", sorted(layout.TARGETS))
def test_sfdisk_reads_back_the_table(name: str, tmp_path: Path) -> None:
    sfdisk = tool("sfdisk")
    target = layout.TARGETS[name]
    plan = layout.plan(target, 300 * layout.MIB, 64 * layout.MIB, 64 * layout.MIB, "t")
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(plan.disk_size)
    subprocess.run(
        [sfdisk, "-q", "--no-reread", "--no-tell-kernel", str(disk)],
        input=layout.sfdisk_script(plan),
        text=True,
        check=True,
    )
    table = json.loads(
        subprocess.run(
            [sfdisk, "--json", str(disk)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    assert table["label"] == plan.table
    parts = table["partitions"]
    assert [p["start"] * 512 for p in parts] == plan.offsets()
    assert [p["size"] * 512 for p in parts] == [p.size for p in plan.partitions]
    if plan.table == "gpt":
        assert [p["name"] for p in parts] == [p.label for p in plan.partitions]
        assert parts[0]["type"] == target.root_type
        assert parts[-1]["type"] == layout.GPT_VAR
    else:
        assert table["id"] == plan.disk_id
        assert parts[0]["type"] == "c"


def test_kernel_command_line_boots_read_only_by_label() -> None:
    line = layout.kernel_cmdline(layout.TARGETS["qemu-amd64"]).split()
    assert "root=LABEL=edge-root-a" in line
    assert "ro" in line and "rw" not in line
    assert "console=ttyS0" in line
    assert "net.ifnames=0" in line
    assert "apparmor=1" in line
    arm = layout.kernel_cmdline(layout.TARGETS["qemu-arm64"]).split()
    assert "console=ttyAMA0" in arm and "vsyscall=none" not in arm


def test_raspberry_pi_boot_files() -> None:
    target = layout.TARGETS["rpi"]
    plan = layout.plan(target, GIB, GIB, 256 * layout.MIB, "rpi:1")
    root = layout.rpi_root(plan)
    assert root == f"PARTUUID={plan.disk_id.removeprefix('0x')}-02"
    line = layout.kernel_cmdline(target, root)
    assert f"root={root}" in line.split()
    config = layout.rpi_config_txt()
    # Wired uplink only: the radios are switched off by the firmware already.
    assert "dtoverlay=disable-wifi" in config
    assert "dtoverlay=disable-bt" in config
    assert "arm_64bit=1" in config
    assert "camera_auto_detect=1" in config
    # The SoC's watchdog for systemd to arm, in the [all] section (before any [pi4] filter).
    assert "dtparam=watchdog=on" in config.split("[pi4]", 1)[0].splitlines()


def test_rpi_build_stops_clearly_without_the_raspberry_pi_archive() -> None:
    require_root()
    env = {k: v for k, v in os.environ.items() if k != "EDGE_RPI_SOURCES"}
    proc = subprocess.run(
        [*BUILD, "--target", "rpi", "--stage", "rootfs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "EDGE_RPI_SOURCES" in proc.stderr


def test_raspberry_pi_slots_have_their_own_command_lines_and_devices() -> None:
    target = layout.TARGETS["rpi"]
    plan = layout.plan(target, GIB, GIB, 256 * layout.MIB, "rpi:1")
    disk = plan.disk_id.removeprefix("0x")
    files = layout.rpi_cmdlines(plan)
    assert set(files) == {"cmdline.txt", "cmdline-b.txt"}
    a, b = files["cmdline.txt"].split(), files["cmdline-b.txt"].split()
    assert f"root=PARTUUID={disk}-02" in a and "rauc.slot=A" in a and "panic=10" in a
    assert f"root=PARTUUID={disk}-03" in b and "rauc.slot=B" in b
    # config.txt takes the confirmed slot's command line from slot.txt (edge-rauc-tryboot).
    assert layout.rpi_config_txt().rstrip().endswith("include slot.txt")
    # RAUC finds the slots by what writing a slot does not change: the seed gives the disk id.
    assert layout.slot_devices(target, "rpi:1") == [
        f"/dev/disk/by-partuuid/{disk}-02",
        f"/dev/disk/by-partuuid/{disk}-03",
    ]
    assert layout.slot_devices(layout.TARGETS["qemu-amd64"], "x") == [
        "/dev/disk/by-partlabel/edge-root-a",
        "/dev/disk/by-partlabel/edge-root-b",
    ]
    assert target.bootloader == "custom"

"""Image layout: targets, partition plans, kernel command lines, Raspberry Pi boot files.

Pure functions over plain data (no I/O), so the layout is unit-tested without building anything.
The disk of every target holds two root slots (A and B, same size; B is empty until the update
mechanism fills it), a persistent data partition mounted on /var, and on the Raspberry Pi a FAT
firmware partition first. Roots are found by label, so either slot can boot the same image.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

MIB = 1024 * 1024
SUITE = "bookworm"

ROOT_A_LABEL = "edge-root-a"
ROOT_B_LABEL = "edge-root-b"
DATA_LABEL = "edge-data"
FIRMWARE_LABEL = "EDGE-FW"

# GPT partition type GUIDs (Discoverable Partitions Specification).
GPT_ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
GPT_ROOT_ARM64 = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"
GPT_VAR = "4D21B016-B534-45C2-A9FB-5C16E091FD2D"


@dataclass(frozen=True)
class Target:
    name: str
    arch: str  # Debian architecture
    console: str
    partition_table: str  # "gpt" or "dos"
    qemu: tuple[str, ...]  # QEMU command without the disk, kernel and command line
    firmware: bool = False  # FAT firmware partition (Raspberry Pi)
    # RAUC's boot loader backend: "grub" (image/bootloader.py: slot choice and boot counter),
    # "custom" (the Raspberry Pi firmware's tryboot, edge-rauc-tryboot), or "noop" where this
    # project has no backend for the target yet (the kernel is booted directly: an installed
    # slot never boots).
    bootloader: str = "noop"

    @property
    def root_type(self) -> str:
        return GPT_ROOT_X86_64 if self.arch == "amd64" else GPT_ROOT_ARM64


TARGETS: dict[str, Target] = {
    "qemu-amd64": Target(
        name="qemu-amd64",
        arch="amd64",
        console="ttyS0",
        partition_table="gpt",
        # KVM is not assumed; qemu64 keeps TCG fast (-cpu max makes amd64 guests crawl), with
        # the x86-64-v2 extensions that NumPy's wheels require (SIGILL without them).
        qemu=(
            "qemu-system-x86_64",
            "-machine",
            "q35",
            "-cpu",
            "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16",
            "-smp",
            "2",
        ),
        bootloader="grub",
    ),
    "qemu-arm64": Target(
        name="qemu-arm64",
        arch="arm64",
        console="ttyAMA0",
        partition_table="gpt",
        qemu=(
            "qemu-system-aarch64",
            "-machine",
            "virt",
            "-cpu",
            "max,pauth-impdef=on",
            "-smp",
            "2",
        ),
    ),
    "rpi": Target(
        name="rpi",
        arch="arm64",
        console="serial0,115200",
        # The Pi 4 boot ROM reads MBR out of the box; four primary partitions fit exactly.
        partition_table="dos",
        qemu=(),
        firmware=True,
        bootloader="custom",  # the firmware's tryboot (edge-rauc-tryboot)
    ),
}

# Modules the initramfs needs to find the root on a virtio disk (MODULES=list keeps the
# initramfs small and, under emulation, its generation fast).
INITRAMFS_MODULES = ("virtio_pci", "virtio_mmio", "virtio_blk", "virtio_scsi", "sd_mod", "ext4")


@dataclass(frozen=True)
class Partition:
    label: str
    size: int  # bytes, multiple of 1 MiB
    type_gpt: str
    type_dos: str
    uuid: str


@dataclass(frozen=True)
class Plan:
    table: str
    disk_id: str
    partitions: tuple[Partition, ...]
    first_offset: int = MIB  # alignment; the Pi and GPT both leave the first MiB alone

    def offsets(self) -> list[int]:
        out, pos = [], self.first_offset
        for part in self.partitions:
            out.append(pos)
            pos += part.size
        return out

    @property
    def disk_size(self) -> int:
        # Room for the backup GPT at the end.
        return self.first_offset + sum(p.size for p in self.partitions) + MIB


def stable_uuid(*parts: str) -> str:
    """A UUID derived from the build inputs: the same inputs give the same image."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "edge-image:" + ":".join(parts)))


def round_up(size: int, unit: int = MIB) -> int:
    return (size + unit - 1) // unit * unit


def root_size(used_bytes: int) -> int:
    """Slot size for a root tree of ``used_bytes``: ext4 overhead, plus room for growth."""
    return round_up(int(used_bytes * 1.35) + 256 * MIB, 64 * MIB)


def plan(target: Target, root_bytes: int, data_bytes: int, firmware_bytes: int, seed: str) -> Plan:
    """Partition plan for ``target``: [firmware], root A, root B, data."""
    parts: list[Partition] = []
    if target.firmware:
        parts.append(
            Partition(
                FIRMWARE_LABEL,
                firmware_bytes,
                "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                "c",
                stable_uuid(seed, "fw"),
            )
        )
    size = root_size(root_bytes)
    for label in (ROOT_A_LABEL, ROOT_B_LABEL):
        parts.append(Partition(label, size, target.root_type, "83", stable_uuid(seed, label)))
    parts.append(Partition(DATA_LABEL, data_bytes, GPT_VAR, "83", stable_uuid(seed, DATA_LABEL)))
    if target.partition_table == "dos":
        disk_id = "0x" + hashlib.sha256(seed.encode()).hexdigest()[:8]
    else:
        disk_id = stable_uuid(seed, "disk").upper()
    return Plan(table=target.partition_table, disk_id=disk_id, partitions=tuple(parts))


def sfdisk_script(p: Plan) -> str:
    """Input for ``sfdisk`` that writes ``p``'s table (sizes in 512-byte sectors)."""
    lines = [f"label: {p.table}", f"label-id: {p.disk_id}", "unit: sectors", ""]
    for part, offset in zip(p.partitions, p.offsets(), strict=True):
        fields = [f"start={offset // 512}", f"size={part.size // 512}"]
        if p.table == "gpt":
            fields += [f"type={part.type_gpt}", f"uuid={part.uuid.upper()}", f'name="{part.label}"']
        else:
            fields.append(f"type={part.type_dos}")
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def kernel_cmdline(target: Target, root: str = f"LABEL={ROOT_A_LABEL}", extra: str = "") -> str:
    """Kernel command line: read-only root by label, serial console, classic interface names."""
    args = [
        f"root={root}",
        "rootfstype=ext4",
        "ro",
        "rootwait",
        f"console={target.console}",
        "net.ifnames=0",
        # AppArmor confines edged; lockdown and slab hardening are BP-028 boot items.
        "apparmor=1",
        "security=apparmor",
        "slab_nomerge",
        "page_alloc.shuffle=1",
        "init_on_alloc=1",
        "vsyscall=none" if target.arch == "amd64" else "",
        "quiet",
        extra,
    ]
    return " ".join(a for a in args if a)


def slot_cmdline(target: Target, slot: str) -> str:
    """Kernel command line of root slot ``slot`` ("A" or "B") as the boot loader starts it:
    its root by label, the slot's name for RAUC, and a reboot 10 s after a panic, so that a
    slot whose kernel cannot start uses up its boot attempts instead of hanging."""
    label = {"A": ROOT_A_LABEL, "B": ROOT_B_LABEL}[slot]
    return kernel_cmdline(target, f"LABEL={label}", extra=f"rauc.slot={slot} panic=10")


def rpi_root(p: Plan, slot: str = "A") -> str:
    """Root slot ``slot`` of a Raspberry Pi disk by PARTUUID (the Pi kernel boots without an
    initramfs)."""
    return f"PARTUUID={p.disk_id.removeprefix('0x')}-0{2 if slot == 'A' else 3}"


# Kernel command line files of the firmware partition, one per slot; slot.txt (included by
# config.txt) names the confirmed one, tryboot.txt the one a tryboot tries (edge-rauc-tryboot).
RPI_CMDLINE_FILES = {"A": "cmdline.txt", "B": "cmdline-b.txt"}


def rpi_cmdlines(p: Plan) -> dict[str, str]:
    """File name -> content: each slot's command line (its root, its name for RAUC, a reboot
    10 s after a panic so that a tried slot that cannot start goes back to the confirmed one)."""
    target = TARGETS["rpi"]
    return {
        name: kernel_cmdline(target, rpi_root(p, slot), extra=f"rauc.slot={slot} panic=10") + "\n"
        for slot, name in RPI_CMDLINE_FILES.items()
    }


def image_seed(target: Target, epoch: int) -> str:
    """What the disk's identifiers derive from (stable_uuid): the target and the build time."""
    return f"{target.name}:{epoch}"


def slot_devices(target: Target, seed: str) -> list[str]:
    """Root slots A and B as RAUC names them: never by file system label, since a slot just
    written carries the label of the bundle's image until its post-install handler restores it.
    GPT: the partition names; MBR (Raspberry Pi): the partition UUIDs of the disk's id."""
    if target.partition_table == "gpt":
        return [f"/dev/disk/by-partlabel/{label}" for label in (ROOT_A_LABEL, ROOT_B_LABEL)]
    disk = plan(target, 0, MIB, MIB, seed).disk_id.removeprefix("0x")
    return [f"/dev/disk/by-partuuid/{disk}-02", f"/dev/disk/by-partuuid/{disk}-03"]


def rpi_config_txt() -> str:
    """config.txt of the firmware partition (Raspberry Pi 4 and 5)."""
    return (
        "# Edge unit: 64-bit kernel, camera auto-detection, no radio (wired uplink only).\n"
        "arm_64bit=1\n"
        "auto_initramfs=0\n"
        "camera_auto_detect=1\n"
        "display_auto_detect=0\n"
        "disable_splash=1\n"
        "dtoverlay=disable-wifi\n"
        "dtoverlay=disable-bt\n"
        "enable_uart=1\n"
        "# The SoC's watchdog (bcm2835-wdt), which systemd arms (system.conf.d/50-edge-watchdog).\n"
        "dtparam=watchdog=on\n"
        "[pi4]\n"
        "kernel=kernel8.img\n"
        "[pi5]\n"
        "kernel=kernel_2712.img\n"
        "[all]\n"
        "# The confirmed root slot's command line (cmdline=...), written by edge-rauc-tryboot.\n"
        "include slot.txt\n"
    )

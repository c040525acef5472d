"""The qemu-amd64 boot loader: GRUB choosing root slot A or B with a boot counter, for RAUC.

The unit boots GRUB (an i386-pc core image behind ``lnxboot.img``, which QEMU loads with
``-kernel`` like a Linux kernel, so the disk layout and the QEMU command stay as they were).
Its script travels inside it (a memdisk): it reads the boot state from ``grubenv`` on the data
partition, the variables RAUC's ``grub`` backend writes (``ORDER``, ``A_OK``, ``A_TRY``,
``B_OK``, ``B_TRY``; ``/etc/rauc/system.conf``: ``bootloader=grub``, ``grubenv=``), picks the
first slot of ``ORDER`` that is good and has attempts left, counts the attempt with
``save_env`` *before* booting it, and loads ``/vmlinuz`` and ``/initrd.img`` from that slot
with the slot's own command line (``root=LABEL=edge-root-a|b``, ``rauc.slot=A|B``).

A slot is confirmed by ``edgectl update mark-good`` (``rauc status mark-good``: ``X_TRY=0``).
A slot that does not get there within ``tries`` boots (a kernel that panics, a root that does
not mount, an edged that never becomes healthy: edge-update-confirm.service reboots) is passed
over and the other slot boots. When no slot has attempts left, GRUB forgets the counts and
boots ``ORDER``'s first good slot again rather than leave a street unit dead.

Pure text functions (tested without GRUB), and ``build`` that runs ``grub-mkimage``.
"""

from __future__ import annotations

import logging
import subprocess
import tarfile
import tempfile
from pathlib import Path

log = logging.getLogger("image")

SLOTS = ("A", "B")
SLOT_LABELS = {"A": "edge-root-a", "B": "edge-root-b"}
DATA_LABEL = "edge-data"
# grubenv on the data partition (mounted on /var): the unit's path, and the path GRUB reads.
GRUBENV_UNIT_PATH = "/var/lib/edge-boot/grubenv"
GRUBENV_DATA_PATH = "/lib/edge-boot/grubenv"
DEFAULT_TRIES = 2
MAX_TRIES = 9  # GRUB's script has no arithmetic: each count is spelled out
GRUBENV_SIZE = 1024
LNXBOOT = Path("/usr/lib/grub/i386-pc/lnxboot.img")
# What the core image needs: BIOS disks, GPT, ext4 (grubenv, kernels), the script's commands.
MODULES = (
    "biosdisk",
    "part_gpt",
    "part_msdos",
    "ext2",
    "memdisk",
    "tar",
    "normal",
    "configfile",
    "search",
    "search_label",
    "loadenv",
    "test",
    "echo",
    "linux",
    "serial",
    "terminal",
    "reboot",
    "sleep",
)


def grubenv(order: tuple[str, ...] = SLOTS, good: tuple[str, ...] = ("A",)) -> bytes:
    """The initial environment block: slot A good and first, slot B empty (not bootable)."""
    lines = [f"ORDER={' '.join(order)}"]
    for slot in SLOTS:
        lines += [f"{slot}_OK={1 if slot in good else 0}", f"{slot}_TRY=0"]
    text = "# GRUB Environment Block\n" + "".join(line + "\n" for line in lines)
    block = text.encode()
    if len(block) > GRUBENV_SIZE:
        raise ValueError("grubenv too long")
    return block + b"#" * (GRUBENV_SIZE - len(block))


def grub_cfg(
    cmdlines: dict[str, str],
    tries: int = DEFAULT_TRIES,
    console: bool = True,
    retry_pause_s: int = 5,
) -> str:
    """The boot script. ``cmdlines``: each slot's whole kernel command line (its root and
    ``rauc.slot=``); ``tries``: boots a slot gets before it is passed over unless confirmed in
    between; ``console``: GRUB also speaks on the first serial port (what a technician plugs);
    ``retry_pause_s``: time to read the console before a slot that did not load restarts."""
    if not 1 <= tries <= MAX_TRIES:
        raise ValueError(f"boot tries must be 1..{MAX_TRIES}, not {tries}")
    # "next count" as a chain of tests: TRY=0 -> 1, ..., TRY=tries-1 -> tries.
    count = "\n".join(
        f'    {"if" if n == 0 else "elif"} [ "$try" = "{n}" ]; then next="{n + 1}"'
        for n in range(tries)
    )
    lines = [
        "# Edge unit boot script (image/bootloader.py): RAUC's A/B slots with a boot counter.",
        "set timeout=0",
    ]
    if console:
        lines += ["serial --unit=0 --speed=115200", "terminal_output serial console"]
    lines += [
        f"search --no-floppy --label {DATA_LABEL} --set=envdev",
        f"set envfile=($envdev){GRUBENV_DATA_PATH}",
        'set ORDER="A B"',
        "set A_OK=0",
        "set A_TRY=0",
        "set B_OK=0",
        "set B_TRY=0",
        "load_env --file $envfile ORDER A_OK A_TRY B_OK B_TRY",
        "",
        "function pick {",
        '  slot=""',
        "  for s in $ORDER; do",
        '    if [ -n "$slot" ]; then continue; fi',
        '    if [ "$s" = A ]; then ok="$A_OK"; try="$A_TRY"; fi',
        '    if [ "$s" = B ]; then ok="$B_OK"; try="$B_TRY"; fi',
        '    if [ "$s" != A -a "$s" != B ]; then continue; fi',
        '    if [ "$ok" != 1 ]; then continue; fi',
        '    next=""',
        count,
        "    fi",
        '    if [ -n "$next" ]; then slot="$s"; fi',
        "  done",
        "}",
        "",
        "pick",
        'if [ -z "$slot" ]; then',
        "  # Every good slot used its attempts: forget the counts rather than leave the unit dead.",
        '  echo "edge-boot: no slot has attempts left; counting again"',
        "  set A_TRY=0",
        "  set B_TRY=0",
        "  pick",
        "fi",
        'if [ -z "$slot" ]; then',
        '  echo "edge-boot: no good slot in ORDER=$ORDER (A_OK=$A_OK B_OK=$B_OK); booting A"',
        "  slot=A",
        '  next="1"',
        "fi",
        'if [ "$slot" = A ]; then A_TRY="$next"; fi',
        'if [ "$slot" = B ]; then B_TRY="$next"; fi',
        "# Counted before the kernel runs: a slot that never comes back still used an attempt.",
        "save_env --file $envfile ORDER A_OK A_TRY B_OK B_TRY",
        f'echo "edge-boot: slot $slot attempt $next of {tries} (ORDER=$ORDER)"',
    ]
    for slot in SLOTS:
        lines += [
            f'if [ "$slot" = {slot} ]; then',
            f"  search --no-floppy --label {SLOT_LABELS[slot]} --set=root",
            f"  linux /vmlinuz {cmdlines[slot]}",
            "  initrd /initrd.img",
            "fi",
        ]
    lines += [
        "boot",
        'echo "edge-boot: slot $slot did not boot; restarting"',
        f"sleep {retry_pause_s}",
        "reboot",
    ]
    return "\n".join(lines) + "\n"


def build(out: Path, cfg: str) -> Path:
    """``out``: a GRUB core image with ``cfg`` in its memdisk, loadable as a Linux kernel."""
    with tempfile.TemporaryDirectory(prefix="grub-") as tmp:
        work = Path(tmp)
        (work / "grub.cfg").write_text(cfg)
        memdisk = work / "memdisk.tar"
        with tarfile.open(memdisk, "w", format=tarfile.USTAR_FORMAT) as tar:
            info = tarfile.TarInfo("boot/grub/grub.cfg")
            data = cfg.encode()
            info.size, info.mode = len(data), 0o644
            with (work / "grub.cfg").open("rb") as f:
                tar.addfile(info, f)
        core = work / "core.img"
        subprocess.run(
            [
                "grub-mkimage",
                "-O",
                "i386-pc",
                "-o",
                str(core),
                "-m",
                str(memdisk),
                "-p",
                "(memdisk)/boot/grub",
                *MODULES,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        out.write_bytes(LNXBOOT.read_bytes() + core.read_bytes())
    log.info("boot loader %s (%d KiB)", out, out.stat().st_size >> 10)
    return out

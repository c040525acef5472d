"""The qemu-amd64 boot loader (image/bootloader.py) judged by GRUB itself: the core image
grub-mkimage builds, booted by QEMU like a kernel, reads the boot state from the data
partition, counts its attempts there with save_env, and passes over a slot whose attempts are
used; grub-editenv (what RAUC's grub backend runs) reads back what GRUB wrote.

The slots hold no kernel (a file GRUB cannot load), so each boot ends in GRUB's own restart:
a few seconds a boot, default tier.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from image import bootloader, layout
from tests.conftest import tool

MIB = 1 << 20
SLOT_MIB, DATA_MIB = 8, 8


def _ext4(img: Path, label: str, tree: Path) -> None:
    with img.open("wb") as f:
        f.truncate(SLOT_MIB * MIB)
    subprocess.run(
        [
            tool("mkfs.ext4"),
            "-q",
            "-F",
            "-L",
            label,
            "-O",
            "^orphan_file",
            "-d",
            str(tree),
            str(img),
        ],
        check=True,
    )


class Disk:
    """A GPT disk of the image's layout: root A, root B, data (labels as the image's)."""

    def __init__(self, folder: Path, env: bytes) -> None:
        self.folder = folder
        self.path = folder / "disk.img"
        slot_tree = folder / "slot"
        slot_tree.mkdir()
        (slot_tree / "vmlinuz").write_bytes(b"not a kernel\n" * 64)
        (slot_tree / "initrd.img").write_bytes(b"\0" * 512)
        data_tree = folder / "data"
        env_file = data_tree / bootloader.GRUBENV_DATA_PATH.lstrip("/")
        env_file.parent.mkdir(parents=True)
        env_file.write_bytes(env)
        labels = [layout.ROOT_A_LABEL, layout.ROOT_B_LABEL, layout.DATA_LABEL]
        parts = []
        for label in labels:
            img = folder / f"{label}.img"
            _ext4(img, label, data_tree if label == layout.DATA_LABEL else slot_tree)
            parts.append(img)
        with self.path.open("wb") as f:
            f.truncate((2 + SLOT_MIB * 2 + DATA_MIB) * MIB)
        table = "label: gpt\n" + "".join(
            f'start={(1 + i * SLOT_MIB) * 2048}, size={SLOT_MIB * 2048}, name="{label}"\n'
            for i, label in enumerate(labels)
        )
        subprocess.run([tool("sfdisk"), "-q", str(self.path)], input=table.encode(), check=True)
        for i, img in enumerate(parts):
            subprocess.run(
                ["dd", f"if={img}", f"of={self.path}", "bs=1M", f"seek={1 + i * SLOT_MIB}",
                 "conv=notrunc", "status=none"],
                check=True,
            )  # fmt: skip
        self.data_offset_mib = 1 + 2 * SLOT_MIB

    def env(self) -> dict[str, str]:
        """The grubenv on the data partition, as grub-editenv (RAUC's tool) lists it."""
        data = self.folder / "data-back.img"
        subprocess.run(
            ["dd", f"if={self.path}", f"of={data}", "bs=1M", f"skip={self.data_offset_mib}",
             f"count={DATA_MIB}", "status=none"],
            check=True,
        )  # fmt: skip
        out = self.folder / "grubenv-back"
        out.unlink(missing_ok=True)
        subprocess.run(
            [tool("debugfs"), "-R", f"dump {bootloader.GRUBENV_DATA_PATH} {out}", str(data)],
            check=True,
            capture_output=True,
        )
        listed = subprocess.run(
            [tool("grub-editenv"), str(out), "list"], check=True, capture_output=True, text=True
        ).stdout
        return dict(line.split("=", 1) for line in listed.splitlines() if "=" in line)

    def boot_once(self, loader: Path) -> str:
        """One power-on: GRUB picks a slot, fails to load its kernel and restarts (QEMU
        stops there, -no-reboot). Returns GRUB's "edge-boot:" lines."""
        serial = self.folder / "serial.log"
        serial.unlink(missing_ok=True)
        proc = subprocess.run(
            [tool("qemu-system-x86_64"), "-machine", "q35", "-m", "256", "-display", "none",
             "-monitor", "none", "-no-reboot", "-kernel", str(loader),
             "-drive", f"file={self.path},format=raw,if=virtio", "-serial", f"file:{serial}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        text = serial.read_text(errors="replace")
        lines = [
            ln.split("edge-boot: ", 1)[1].strip() for ln in text.split("\n") if "edge-boot: " in ln
        ]
        assert lines, text[-2000:]
        return "\n".join(lines)


@pytest.fixture
def loader(tmp_path: Path) -> Path:
    tool("grub-mkimage")
    cmdlines = {s: layout.slot_cmdline(layout.TARGETS["qemu-amd64"], s) for s in bootloader.SLOTS}
    return bootloader.build(
        tmp_path / "edge-boot.lnx", bootloader.grub_cfg(cmdlines, tries=2, retry_pause_s=0)
    )


def test_a_flashed_disk_boots_slot_a_and_counts_the_attempt(tmp_path: Path, loader: Path) -> None:
    env = tmp_path / "grubenv"
    env.write_bytes(bootloader.grubenv())
    disk = _rebuilt(tmp_path, env)
    assert disk.env() == {"ORDER": "A B", "A_OK": "1", "A_TRY": "0", "B_OK": "0", "B_TRY": "0"}
    said = disk.boot_once(loader)
    assert "slot A attempt 1 of 2" in said and "slot A did not boot" in said, said
    assert disk.env()["A_TRY"] == "1"


def test_an_unconfirmed_slot_gets_its_tries_then_the_previous_slot_boots(
    tmp_path: Path, loader: Path
) -> None:
    # The state RAUC's grub backend leaves after installing into B (ORDER B first, B good and
    # not tried), written here with grub-editenv as RAUC does.
    env = tmp_path / "grubenv"
    env.write_bytes(bootloader.grubenv())
    subprocess.run(
        [tool("grub-editenv"), str(env), "set", "ORDER=B A", "B_OK=1", "B_TRY=0"], check=True
    )
    disk = _rebuilt(tmp_path, env)
    seen = []
    for _ in range(4):
        said = disk.boot_once(loader)
        seen.append(said.splitlines()[0])
        state = disk.env()
        seen_state = (state["A_TRY"], state["B_TRY"])
        seen[-1] += f" -> A_TRY={seen_state[0]} B_TRY={seen_state[1]}"
    assert seen == [
        "slot B attempt 1 of 2 (ORDER=B A) -> A_TRY=0 B_TRY=1",
        "slot B attempt 2 of 2 (ORDER=B A) -> A_TRY=0 B_TRY=2",
        "slot A attempt 1 of 2 (ORDER=B A) -> A_TRY=1 B_TRY=2",
        "slot A attempt 2 of 2 (ORDER=B A) -> A_TRY=2 B_TRY=2",
    ], seen
    # Every attempt used: GRUB counts again rather than leave the unit dead.
    said = disk.boot_once(loader)
    assert said.splitlines()[:2] == [
        "no slot has attempts left; counting again",
        "slot B attempt 1 of 2 (ORDER=B A)",
    ], said


def test_a_confirmed_slot_is_booted_again_and_a_bad_one_never(tmp_path: Path, loader: Path) -> None:
    # After a roll-back, mark-good on A and mark-bad on B (RAUC: A_TRY=0, B_OK=0).
    env = tmp_path / "grubenv"
    env.write_bytes(bootloader.grubenv(order=("B", "A"), good=("A",)))
    disk = _rebuilt(tmp_path, env)
    for attempt in (1, 2):
        said = disk.boot_once(loader)
        assert said.splitlines()[0] == f"slot A attempt {attempt} of 2 (ORDER=B A)", said
    assert disk.env()["B_TRY"] == "0"


def _rebuilt(tmp_path: Path, env: Path) -> Disk:
    folder = tmp_path / f"disk-{len(list(tmp_path.glob('disk-*')))}"
    folder.mkdir()
    return Disk(folder, env.read_bytes())


def test_the_script_refuses_a_count_it_cannot_spell() -> None:
    cmdlines = {"A": "root=LABEL=edge-root-a", "B": "root=LABEL=edge-root-b"}
    with pytest.raises(ValueError, match=r"1\.\.9"):
        bootloader.grub_cfg(cmdlines, tries=0)
    script = bootloader.grub_cfg(cmdlines, tries=3)
    assert 'elif [ "$try" = "2" ]; then next="3"' in script
    assert "linux /vmlinuz root=LABEL=edge-root-b" in script


def test_each_slot_boots_its_own_root_with_its_name_for_rauc() -> None:
    target = layout.TARGETS["qemu-amd64"]
    for slot, label in (("A", layout.ROOT_A_LABEL), ("B", layout.ROOT_B_LABEL)):
        line = layout.slot_cmdline(target, slot).split()
        assert f"root=LABEL={label}" in line and f"rauc.slot={slot}" in line
        assert "panic=10" in line and "ro" in line
    assert target.bootloader == "grub" and layout.TARGETS["qemu-arm64"].bootloader == "noop"

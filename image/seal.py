"""Seal a provisioned root into a flashable image (the I/O around layout.py's plan).

The root file system becomes slot A (ext4, mounted read-only); slot B is an empty ext4 of the
same size for the update mechanism; /var moves to the data partition (persistent, writable).
Partitions are built as files with ``mkfs.ext4 -d`` and ``mkfs.vfat``/``mcopy`` (no mount, no
loop device) and placed in the disk image at their offsets; ``bmaptool create`` maps the blocks
that matter, so flashing writes only those.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from image import bootloader, layout

log = logging.getLogger("image")
BOOT_LOADER = "edge-boot.lnx"  # QEMU: -kernel edge-boot.lnx (image/bootloader.py)


def _run(cmd: list[str], **kwargs: object) -> None:
    log.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


@contextlib.contextmanager
def pseudo_mounts(root: Path) -> Iterator[None]:
    """/proc, /sys and /dev inside the root while the playbook runs there; always unmounted."""
    mounted: list[Path] = []
    try:
        for fstype, src, point in (
            ("proc", "proc", "proc"),
            ("bind", "/sys", "sys"),
            ("bind", "/dev", "dev"),
        ):
            target = root / point
            target.mkdir(exist_ok=True)
            if fstype == "bind":
                _run(["mount", "--rbind", "--make-rslave", src, str(target)])
            else:
                _run(["mount", "-t", fstype, src, str(target)])
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-R", "-l", str(target)], check=False)


def _clean(root: Path) -> None:
    """Remove what the build left that must not ship or that differs from build to build."""
    for pattern in (
        "etc/apt/sources.list.d/*",
        "etc/apt/sources.list",
        "var/lib/apt/lists/*",
        "var/cache/apt/*.bin",
        "var/cache/apt/archives/*.deb",
        "var/log/apt/*",
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/cache/debconf/*-old",
        "var/lib/dpkg/*-old",
        "etc/ssh/ssh_host_*",
        "var/lib/dbus/machine-id",
        "tmp/*",
        "var/tmp/*",
        "root/.ansible",
        "root/.cache",
        "etc/*-",
    ):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    # An empty machine-id: systemd makes a transient one at each boot on the read-only root.
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text("edge\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tedge\n")


def _clamp_mtimes(tree: Path, epoch: int) -> None:
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames + ["."]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if st.st_mtime > epoch:
                os.utime(path, (epoch, epoch), follow_symlinks=False)


def _tree_bytes(tree: Path) -> int:
    out = subprocess.run(
        ["du", "-s", "-B1", "--apparent-size", str(tree)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.split()[0])


def _mkfs_ext4(img: Path, size: int, label: str, uuid: str, tree: Path | None, epoch: int) -> None:
    img.unlink(missing_ok=True)
    with img.open("wb") as f:
        f.truncate(size)
    cmd = [
        "mkfs.ext4",
        "-q",
        "-F",
        "-L",
        label,
        "-U",
        uuid,
        "-E",
        f"hash_seed={uuid},root_owner=0:0",
        "-O",
        "^orphan_file",
    ]
    if tree is not None:
        cmd += ["-d", str(tree)]
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(epoch))
    _run([*cmd, str(img)], env=env)


def _debian_packages(root: Path) -> list[dict[str, str]]:
    out = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={root}/var/lib/dpkg",
            "-W",
            "-f=${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = []
    for line in sorted(out.stdout.splitlines()):
        name, version, arch, src, srcver = line.split("\t")
        rows.append(
            {
                "name": name,
                "version": version,
                "arch": arch,
                "source": src,
                "source_version": srcver,
                "purl": f"pkg:deb/debian/{name}@{version}?arch={arch}",
            }
        )
    return rows


def _python_packages(root: Path) -> list[dict[str, str]]:
    rows = []
    for meta in sorted(root.glob("opt/edge/venv/lib/python3*/site-packages/*.dist-info/METADATA")):
        fields = dict(
            line.split(": ", 1)
            for line in meta.read_text(errors="replace").splitlines()[:20]
            if ": " in line
        )
        name, version = fields.get("Name", "?"), fields.get("Version", "?")
        rows.append(
            {"name": name, "version": version, "purl": f"pkg:pypi/{name.lower()}@{version}"}
        )
    return rows


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _firmware_partition(img: Path, size: int, root: Path, p: layout.Plan, epoch: int) -> None:
    """The Raspberry Pi firmware partition: firmware, kernels, DTBs, config.txt, cmdline.txt."""
    img.unlink(missing_ok=True)
    volid = p.disk_id.removeprefix("0x")[:8]
    _run(
        [
            "mkfs.vfat",
            "-F",
            "32",
            "-n",
            layout.FIRMWARE_LABEL,
            "-i",
            volid,
            "-C",
            str(img),
            str(size // 1024),
        ],
        env=dict(os.environ, SOURCE_DATE_EPOCH=str(epoch)),
    )
    fw = root / "boot" / "firmware"
    (fw / "config.txt").write_text(layout.rpi_config_txt())
    (fw / "slot.txt").write_text(f"cmdline={layout.RPI_CMDLINE_FILES['A']}\n")
    for name, text in layout.rpi_cmdlines(p).items():
        (fw / name).write_text(text)
    files = sorted(str(f) for f in fw.iterdir())
    _run(["mcopy", "-s", "-p", "-m", "-i", str(img), *files, "::/"])


def seal(
    target: layout.Target,
    root: Path,
    out: Path,
    epoch: int,
    data_size: int,
    packages_listed: list[str],
    keep_root: bool = False,
    boot_tries: int = bootloader.DEFAULT_TRIES,
) -> Path:
    """Turn ``root`` into ``out/edge-TARGET.img`` (+ .bmap, manifest, kernel and initrd, and
    for a GRUB target the boot loader ``edge-boot.lnx``).

    ``keep_root``: leave slot A's partition image in ``out/parts/`` for the update bundle;
    ``boot_tries``: boots an unconfirmed slot gets before the boot loader goes back."""
    _clean(root)
    debs = _debian_packages(root)
    pys = _python_packages(root)

    # /var, with dpkg's database, logs, the journal and edged's data, goes to the data partition.
    data_tree = out / "data-tree"
    if data_tree.exists():
        shutil.rmtree(data_tree)
    data_tree.mkdir(mode=0o755)
    for child in sorted((root / "var").iterdir()):
        child.rename(data_tree / child.name)

    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not target.firmware:
        if not kernels or not initrds:
            raise SystemExit("image: no kernel or initrd in the root file system")
        shutil.copy(kernels[-1], out / "vmlinuz")
        shutil.copy(initrds[-1], out / "initrd.img")
        (out / "cmdline.txt").write_text(layout.kernel_cmdline(target) + "\n")
    if target.bootloader == "grub":
        # The boot state lives on the data partition, which every slot sees and updates keep.
        env = data_tree / bootloader.GRUBENV_DATA_PATH.lstrip("/")
        env.parent.mkdir(parents=True, exist_ok=True)
        env.write_bytes(bootloader.grubenv())
        env.chmod(0o644)
        cmdlines = {slot: layout.slot_cmdline(target, slot) for slot in bootloader.SLOTS}
        bootloader.build(out / BOOT_LOADER, bootloader.grub_cfg(cmdlines, boot_tries))

    _clamp_mtimes(root, epoch)
    _clamp_mtimes(data_tree, epoch)
    seed = layout.image_seed(target, epoch)
    fw_size = 256 * layout.MIB
    p = layout.plan(target, _tree_bytes(root), data_size, fw_size, seed)
    parts_dir = out / "parts"
    parts_dir.mkdir(exist_ok=True)
    images: list[Path] = []
    for part in p.partitions:
        img = parts_dir / f"{part.label}.img"
        if part.label == layout.FIRMWARE_LABEL:
            _firmware_partition(img, part.size, root, p, epoch)
        elif part.label == layout.ROOT_A_LABEL:
            _mkfs_ext4(img, part.size, part.label, part.uuid, root, epoch)
        elif part.label == layout.ROOT_B_LABEL:
            _mkfs_ext4(img, part.size, part.label, part.uuid, None, epoch)
        else:
            _mkfs_ext4(img, part.size, part.label, part.uuid, data_tree, epoch)
        images.append(img)

    disk = out / f"edge-{target.name}.img"
    disk.unlink(missing_ok=True)
    with disk.open("wb") as f:
        f.truncate(p.disk_size)
    _run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(disk)],
        input=layout.sfdisk_script(p).encode(),
    )
    for img, offset in zip(images, p.offsets(), strict=True):
        _run(
            [
                "dd",
                f"if={img}",
                f"of={disk}",
                "bs=1M",
                f"seek={offset // layout.MIB}",
                "conv=notrunc,sparse",
                "status=none",
            ]
        )
        if not (keep_root and img.name == f"{layout.ROOT_A_LABEL}.img"):
            img.unlink()
    bmap = disk.with_suffix(".bmap")
    _run(["bmaptool", "-q", "create", "-o", str(bmap), str(disk)])

    manifest = {
        "image": disk.name,
        "target": target.name,
        "architecture": target.arch,
        "suite": layout.SUITE,
        "source_date_epoch": epoch,
        "sha256": _sha256(disk),
        "size": p.disk_size,
        "partition_table": p.table,
        "disk_id": p.disk_id,
        "partitions": [
            {"label": part.label, "offset": off, "size": part.size, "uuid": part.uuid}
            for part, off in zip(p.partitions, p.offsets(), strict=True)
        ],
        "kernel_cmdline": layout.kernel_cmdline(
            target, layout.rpi_root(p) if target.firmware else f"LABEL={layout.ROOT_A_LABEL}"
        ),
        "boot_loader": target.bootloader,
        "boot_tries": boot_tries if target.bootloader == "grub" else None,
        "packages_listed": packages_listed,
        "debian_packages": debs,
        "python_packages": pys,
    }
    (out / f"edge-{target.name}.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    # The same list, one "name=version" a line: copy it to image/packages/TARGET.lock to pin.
    (out / f"edge-{target.name}.lock").write_text(
        "".join(f"{d['name']}={d['version']}\n" for d in debs)
    )
    log.info(
        "image %s (%d MiB), %d Debian and %d Python packages",
        disk,
        p.disk_size // layout.MIB,
        len(debs),
        len(pys),
    )
    return disk

#!/usr/bin/env python3
"""Build a flashable edge image: ``make image TARGET=qemu-amd64|qemu-arm64|rpi``.

Stages (each can be run alone; ``all`` runs them in order):

rootfs     Debian bookworm with mmdebstrap from image/packages/*.txt, cached as a tarball under
           image/cache/ keyed on the package list, the architecture and the apt sources.
unpack     the cached tarball into image/out/TARGET/root.
wheels     a wheel of this repository and its dependencies for the target's architecture (with
           the extras the role variables ask for, e.g. analytics), and the pinned analytics
           models fetched on this machine and checked against their SHA-256 (image/models.py).
provision  ansible/playbooks/provision-image.yml through the chroot connection.
seal       read-only root, /var split to the data partition, A/B slots, partition image, .bmap,
           kernel and initrd beside it, manifest.json (packages and versions, inputs, hashes).

Package sources are the build machine's own (its apt sources and pip configuration); a city
points EDGE_APT_SOURCES at another deb822 file. Builds are reproducible for the same inputs:
SOURCE_DATE_EPOCH (default: the last commit's time) fixes every timestamp and UUID.
Needs root (chroot, ownership of the root file system).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script (make image): make the repository importable for `image.layout`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from image import bootloader, bundle, layout, models, seal

log = logging.getLogger("image")

IMAGE_DIR = Path(__file__).resolve().parent
REPO = IMAGE_DIR.parent
ANSIBLE_DIR = REPO / "ansible"
CACHE = Path(os.environ.get("EDGE_IMAGE_CACHE", IMAGE_DIR / "cache"))
OUT = Path(os.environ.get("EDGE_IMAGE_OUT", IMAGE_DIR / "out"))
# Requirements the distribution provides (no wheel exists for every architecture); the
# virtualenv sees them through --system-site-packages.
FROM_DISTRIBUTION = {"systemd-python": "python3-systemd"}
STAGES = ("rootfs", "unpack", "wheels", "provision", "seal")


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    log.info("$ %s", " ".join(cmd))
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def source_date_epoch() -> int:
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    out = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct"], capture_output=True, text=True
    )
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else 0


def read_list(path: Path) -> list[str]:
    items = []
    for line in path.read_text().splitlines():
        item = line.split("#", 1)[0].strip()
        if item:
            items.append(item)
    return items


def packages(target: layout.Target) -> list[str]:
    pkgs = read_list(IMAGE_DIR / "packages" / "common.txt")
    pkgs += read_list(IMAGE_DIR / "packages" / f"{target.name}.txt")
    lock = IMAGE_DIR / "packages" / f"{target.name}.lock"
    if lock.exists():
        # A lock file (from a previous manifest) pins every package, dependencies included.
        pkgs = read_list(lock)
    return sorted(set(pkgs))


def apt_sources(target: layout.Target) -> list[Path]:
    """The deb822 source files mmdebstrap gets: the machine's own, or the city's."""
    given = os.environ.get("EDGE_APT_SOURCES")
    files = [Path(given)] if given else sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    one_line = Path("/etc/apt/sources.list")
    if not given and one_line.exists() and read_list(one_line):
        files.append(one_line)
    if target.firmware:
        rpi = os.environ.get("EDGE_RPI_SOURCES")
        if not rpi:
            raise SystemExit(
                "image: the rpi target needs the Raspberry Pi archive: set EDGE_RPI_SOURCES to a "
                "deb822 .sources file for it (with its Signed-By keyring); see docs/OPERATIONS.md"
            )
        files.append(Path(rpi))
    return files


def essential_hook(target: layout.Target) -> str:
    """Shell run in the new root before the kernel is installed: a small initramfs.

    MODULES=list plus a hook adding the virtio and ext4 modules (udev loads them by alias):
    "most" would make generating the initramfs take half an hour under arm64 emulation.
    """
    modules = " ".join(layout.INITRAMFS_MODULES)
    hook = (
        "#!/bin/sh\\n"
        '[ \\"\\$1\\" = prereqs ] && exit 0\\n'
        ". /usr/share/initramfs-tools/hook-functions\\n"
        f'for m in {modules}; do manual_add_modules \\"\\$m\\"; done\\n'
    )
    return (
        'mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks" && '
        'printf "MODULES=list\\nCOMPRESS=zstd\\n" > "$1/etc/initramfs-tools/conf.d/edge.conf" && '
        f'printf "{hook}" > "$1/etc/initramfs-tools/hooks/edge-disk" && '
        'chmod 0755 "$1/etc/initramfs-tools/hooks/edge-disk"'
    )


def rootfs_key(target: layout.Target, pkgs: list[str], sources: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps([layout.SUITE, target.arch, target.name, pkgs, essential_hook(target)]).encode()
    )
    for path in sources:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def stage_rootfs(target: layout.Target, epoch: int) -> Path:
    pkgs = packages(target)
    sources = apt_sources(target)
    tarball = CACHE / f"rootfs-{target.name}-{rootfs_key(target, pkgs, sources)}.tar"
    if tarball.exists():
        log.info("root file system from cache: %s", tarball)
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    if target.arch != "amd64" and os.uname().machine == "x86_64":
        binfmt = Path("/proc/sys/fs/binfmt_misc")
        if not (binfmt / "status").exists():
            run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
        if not (binfmt / "qemu-aarch64").exists():
            run(["update-binfmts", "--enable", "qemu-aarch64"])
    tmp = tarball.with_suffix(".partial")
    cmd = [
        "mmdebstrap",
        "--variant=minbase",
        f"--arch={target.arch}",
        "--include=" + ",".join(pkgs),
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        '--aptopt=APT::Install-Recommends "false"',
        f"--essential-hook={essential_hook(target)}",
        "--format=tar",
        layout.SUITE,
        str(tmp),
        *[str(s) for s in sources],
    ]
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    started = time.monotonic()
    run(cmd, env=env)
    tmp.rename(tarball)
    log.info("root file system built in %.0f s: %s", time.monotonic() - started, tarball)
    return tarball


def stage_unpack(target: layout.Target, tarball: Path) -> Path:
    root = OUT / target.name / "root"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    run(["tar", "--numeric-owner", "-xpf", str(tarball), "-C", str(root)])
    return root


def _wheel_requirements(wheel: Path, extras: tuple[str, ...] = ()) -> list[str]:
    """Requirements of the package wheel (unconditional, and those of ``extras``), less what
    the distribution provides."""
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    reqs = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].strip()
        if ";" in req and "extra" in req.split(";", 1)[1]:
            marker = req.split(";", 1)[1].replace('"', "'").replace(" ", "")
            if not any(f"extra=='{extra}'" in marker for extra in extras):
                continue
        name = req.split(";")[0].strip()
        base = name.split("[")[0]
        for op in "<>=!~ (":
            base = base.split(op)[0]
        if base.lower().replace("_", "-") in FROM_DISTRIBUTION:
            continue
        reqs.append(name)
    return reqs


def role_vars(target: layout.Target) -> dict[str, object]:
    """The role variables the build itself needs: the profile's, then each EDGE_IMAGE_VARS file's
    (a later file replaces a variable, as ansible-playbook -e does)."""
    files = [_profile_vars(target)]
    files += [Path(p) for p in os.environ.get("EDGE_IMAGE_VARS", "").split(":") if p]
    try:
        return models.load_vars(files)
    except models.ModelError as exc:
        raise SystemExit(f"image: {exc}") from None


def _extras(target: layout.Target) -> tuple[str, ...]:
    raw = role_vars(target).get("edge_daemon_extras") or []
    if not isinstance(raw, list) or not all(isinstance(e, str) for e in raw):
        raise SystemExit("image: edge_daemon_extras must be a list of extra names")
    return tuple(sorted(raw))


def stage_models(target: layout.Target) -> Path:
    """Fetches the pinned models of the role variables into the cache and stages them for the
    role (edge_daemon_models_dir); a wrong digest stops the build."""
    dest = OUT / target.name / "models"
    try:
        specs = models.parse_specs(role_vars(target).get("edge_daemon_models"))
        models.stage(specs, CACHE / "models", dest)
    except models.ModelError as exc:
        raise SystemExit(f"image: {exc}") from None
    return dest


# What a unit wheel is built from. A clean copy, because setuptools packs whatever an earlier
# build left in build/lib (the CSU side included) into the next wheel.
UNIT_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "edge")


def build_unit_wheel(dest: Path) -> Path:
    """Builds the unit's `edge` wheel into ``dest`` from a clean copy of the sources and checks
    that nothing of the CSU side (csu/pyproject.toml: receiver, web, CA) is in it."""
    with tempfile.TemporaryDirectory(prefix="edge-unit-src-") as tmp:
        src = Path(tmp)
        for name in UNIT_SOURCES:
            if (REPO / name).is_dir():
                shutil.copytree(
                    REPO / name,
                    src / name,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
            else:
                shutil.copy2(REPO / name, src / name)
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(src), "-w", str(dest)])
    wheel = next(dest.glob("edge-*.whl"))
    leaks = unit_wheel_leaks(wheel)
    if leaks:
        raise SystemExit(f"image: the unit wheel carries CSU parts: {', '.join(leaks)}")
    return wheel


def unit_wheel_leaks(wheel: Path) -> list[str]:
    """What of the CSU side a unit wheel carries: ``edge/csu`` files, an ``edge-csu`` entry
    point, a requirement on aiohttp. Empty for a good unit wheel."""
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        leaks = [n for n in names if n.startswith("edge/csu/")]
        for name in names:
            text = (
                zf.read(name).decode()
                if name.endswith((".dist-info/entry_points.txt", ".dist-info/METADATA"))
                else ""
            )
            if name.endswith("entry_points.txt") and "edge-csu" in text:
                leaks.append(f"{name} (edge-csu)")
            leaks += [
                line for line in text.splitlines() if line.startswith("Requires-Dist: aiohttp")
            ]
    return leaks


def stage_wheels(target: layout.Target) -> tuple[Path, str]:
    """Wheelhouse for the target: the package wheel, its dependencies, pip as pip.pyz."""
    house = OUT / target.name / "wheelhouse"
    if house.exists():
        shutil.rmtree(house)
    house.mkdir(parents=True)
    py = sys.executable
    wheel = build_unit_wheel(house)
    version = wheel.name.split("-")[1]
    reqs = [*sorted(_wheel_requirements(wheel, _extras(target))), "pip"]
    key = hashlib.sha256(json.dumps([target.arch, reqs]).encode()).hexdigest()[:16]
    deps = CACHE / f"wheels-{target.arch}-{key}"
    if not deps.exists():
        machine = {"amd64": "x86_64", "arm64": "aarch64"}[target.arch]
        # bookworm: glibc 2.36, CPython 3.11.
        plats = [f"manylinux_2_{n}_{machine}" for n in range(17, 37)] + [f"manylinux2014_{machine}"]
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        cmd = [
            py,
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "-d",
            str(tmp),
        ]
        for plat in plats:
            cmd += ["--platform", plat]
        run(cmd + reqs)
        tmp.rename(deps)
    for whl in deps.iterdir():
        if whl.name.startswith("pip-"):
            shutil.copy(whl, house / "pip.pyz")  # run from its wheel, never installed
        else:
            shutil.copy(whl, house / whl.name)
    stage_models(target)
    return house, version


def _boot_tries(target: layout.Target) -> int:
    """Boots an unconfirmed slot gets (edge_daemon_update_boot_tries), for the boot loader."""
    raw = role_vars(target).get("edge_daemon_update_boot_tries", bootloader.DEFAULT_TRIES)
    if not isinstance(raw, int) or not 1 <= raw <= bootloader.MAX_TRIES:
        raise SystemExit(
            f"image: edge_daemon_update_boot_tries must be 1..{bootloader.MAX_TRIES}, not {raw!r}"
        )
    return raw


def _profile_vars(target: layout.Target) -> Path:
    return IMAGE_DIR / "profiles" / ("rpi.yml" if target.firmware else "qemu.yml")


def stage_provision(target: layout.Target, root: Path, house: Path, version: str) -> str:
    """Runs the playbook on the root; returns its recap line (the idempotence check reads it)."""
    inv = OUT / target.name / "inventory.yml"
    inv.write_text(
        json.dumps(
            {
                "edge_image": {
                    "hosts": {
                        f"edge-{target.name}": {
                            "ansible_host": str(root),
                            "ansible_connection": "community.general.chroot",
                            "ansible_python_interpreter": "/usr/bin/python3",
                        }
                    }
                }
            },
            indent=2,
        )
    )
    bindir = Path(sys.executable).parent
    cmd = [
        str(bindir / "ansible-playbook"),
        "-i",
        str(inv),
        str(ANSIBLE_DIR / "playbooks" / "provision-image.yml"),
        "-e",
        f"@{_profile_vars(target)}",
        "-e",
        json.dumps(
            {
                "edge_daemon_wheelhouse": str(house),
                "edge_daemon_version": version,
                "edge_daemon_models_dir": str(OUT / target.name / "models"),
                # The bundles image/bundle.py makes install only on units of this target.
                "edge_daemon_update_compatible": bundle.compatible(target.name),
                # The target's boot loader backend (image/layout.py, image/bootloader.py).
                "edge_daemon_update_bootloader": target.bootloader,
                # RAUC mounts a bundle (squashfs) to install it: allowed when updates are.
                "edge_hardening_modules_squashfs": bool(
                    role_vars(target).get("edge_daemon_update_keyring")
                ),
                "edge_daemon_update_slot_devices": layout.slot_devices(
                    target, layout.image_seed(target, source_date_epoch())
                ),
            }
        ),
    ]
    for extra in filter(None, os.environ.get("EDGE_IMAGE_VARS", "").split(":")):
        cmd += ["-e", f"@{extra}"]
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        PATH=f"{bindir}:{os.environ.get('PATH', '')}",
    )
    # The chroot needs the kernel's pseudo file systems for apt, nft -c and apparmor_parser.
    with seal.pseudo_mounts(root):
        proc = subprocess.run(cmd, cwd=ANSIBLE_DIR, env=env, text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    (OUT / target.name / "provision.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"image: provisioning failed (exit {proc.returncode})")
    recap = [ln for ln in proc.stdout.splitlines() if "ok=" in ln and "changed=" in ln]
    return recap[-1] if recap else ""


def stage_bundle(target: layout.Target, signer: tuple[Path, Path] | None, version: str) -> None:
    """The update bundle from slot A's partition image, signed with the city's update key."""
    out = OUT / target.name
    root_img = out / "parts" / f"{layout.ROOT_A_LABEL}.img"
    if signer is None:
        log.warning(
            "no update bundle: give the city's update signer (EDGE_UPDATE_CERT, "
            "EDGE_UPDATE_KEY; edge-csu ca issue CA NAME --profile update)"
        )
        return
    if not version:
        version = next((OUT / target.name / "wheelhouse").glob("edge-*.whl")).name.split("-")[1]
    cert, key = signer
    bundle.build_bundle(
        root_img,
        out / f"edge-{target.name}-{version}.raucb",
        target_name=target.name,
        version=version,
        cert=cert,
        key=key,
    )
    root_img.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", choices=sorted(layout.TARGETS), default="qemu-amd64")
    parser.add_argument("--stage", choices=(*STAGES, "all"), default="all")
    parser.add_argument("--data-size-mib", type=int, default=512, help="data partition (/var) size")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="image: %(message)s")
    if os.geteuid() != 0:
        raise SystemExit("image: run as root (chroot and file ownership in the root file system)")
    target = layout.TARGETS[args.target]
    epoch = source_date_epoch()
    stages = STAGES if args.stage == "all" else (args.stage,)
    root = OUT / target.name / "root"
    house = OUT / target.name / "wheelhouse"
    version = ""
    started = time.monotonic()
    for stage in stages:
        t0 = time.monotonic()
        if stage == "rootfs":
            tarball = stage_rootfs(target, epoch)
        elif stage == "unpack":
            tarball = stage_rootfs(target, epoch)
            root = stage_unpack(target, tarball)
        elif stage == "wheels":
            house, version = stage_wheels(target)
        elif stage == "provision":
            if not version:
                version = next(house.glob("edge-*.whl")).name.split("-")[1]
            recap = stage_provision(target, root, house, version)
            print(f"PROVISION-RECAP {recap}")  # noqa: T201  (read by the idempotence test)
        elif stage == "seal":
            signer = bundle.signer_from_env()
            seal.seal(
                target,
                root,
                OUT / target.name,
                epoch,
                args.data_size_mib * layout.MIB,
                packages_listed=packages(target),
                keep_root=signer is not None,
                boot_tries=_boot_tries(target),
            )
            stage_bundle(target, signer, version)
        log.info("stage %s: %.0f s", stage, time.monotonic() - t0)
    log.info("done in %.0f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

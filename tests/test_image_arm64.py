"""The arm64 image under emulation (slow tier): build, provision twice, seal, boot, self-check.

mmdebstrap runs arm64 package scripts through qemu-user (~7 min cold, then cached), the
playbook runs the image's Python under qemu-user too, and the boot is QEMU `virt` under TCG.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests import image_util
from tests.conftest import require_root, tool

TARGET = "qemu-arm64"


@pytest.mark.slow
def test_arm64_image_provisions_idempotently_and_boots_into_edged(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    require_root()
    for name in ("mmdebstrap", "qemu-aarch64-static", "qemu-system-aarch64", "bmaptool"):
        tool(name)
    out = tmp_path_factory.mktemp("image-arm64")
    try:
        image_util.build_stage(TARGET, "unpack", out, timeout=3600)
        image_util.build_stage(TARGET, "wheels", out)
        first = image_util.provision(TARGET, out)
        second = image_util.provision(TARGET, out)
        assert first.failed == 0 and first.changed > 10
        assert second.changed == 0, second.log[-3000:]
        nft = subprocess.run(
            [tool("nft"), "-c", "-f", str(out / TARGET / "root/etc/nftables.conf")],
            capture_output=True,
            text=True,
        )
        assert nft.returncode == 0, nft.stderr
        # Native wheels must be the target's: an amd64 wheel in an arm64 venv fails only at boot.
        site = next((out / TARGET / "root/opt/edge/venv/lib").glob("python3*/site-packages"))
        assert list(site.glob("numpy/_core/*aarch64*.so")), "numpy is not built for arm64"
        image_util.build_stage(TARGET, "seal", out)
        report = image_util.boot(TARGET, out / TARGET, timeout=1200)
        assert report.finished, report.console[-5000:]
        assert report.powered_off
        assert report.one("system") == "running", report.facts.get("failed-unit")
        assert report.one("edged").startswith("active"), report.facts.get("edged-log")
        assert report.one("edged-apparmor") == "edged (enforce)"
        assert report.one("apparmor-denials") == "0", report.facts.get("apparmor-denial")
        assert report.one("firewall-policy") == "policy drop / policy drop"
        ports = image_util.listening_ports(report.facts.get("listen", []))
        assert ports <= {("tcp", 22), ("udp", 68)}
        assert report.one("kernel").endswith("aarch64")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_arm64_boot_command_is_the_facts_one() -> None:
    """The machine settings measured to boot Debian arm64 under TCG in ~40 s."""
    qemu = image_util.layout.TARGETS[TARGET].qemu
    assert qemu[0] == "qemu-system-aarch64"
    assert "virt" in qemu and "max,pauth-impdef=on" in qemu
    kernel_list = Path(image_util.IMAGE / "packages" / f"{TARGET}.txt").read_text()
    assert "linux-image-arm64" in kernel_list

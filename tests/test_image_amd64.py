"""The amd64 image end to end: provision twice through the chroot connection, check the root
offline with the tools that consume it, seal it, boot it under QEMU and read its self-check.

Root only. The first run on a machine builds the root file system with mmdebstrap (~2.5 min) and
caches it in image/cache/; later runs unpack the tarball (~10 s).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import image_util
from tests.conftest import require_root, tool
from tests.tflite_models import ssd_model

TARGET = "qemu-amd64"
RADIO_DIRS = (
    "drivers/net/wireless",
    "net/wireless",
    "net/mac80211",
    "net/bluetooth",
    "drivers/bluetooth",
)


@dataclass
class Built:
    out: Path  # image_util's output folder for the target
    first: image_util.Recap
    second: image_util.Recap
    seconds: dict[str, float]
    city: Path  # the city variables the image was built with

    @property
    def root(self) -> Path:
        return self.out / "root"


MODEL_LABELS = ["person", "bicycle", "car"]


def _city_vars(folder: Path) -> dict[str, str]:
    """City variables on top of the profile: one pinned detector model from a file:// URL (a
    real tiny LiteRT model), the way a city pins its own."""
    model = ssd_model(folder / "detector.tflite", side=8, rows=10)
    labels = folder / "labels.txt"
    labels.write_text("\n".join(MODEL_LABELS) + "\n")
    spec = {
        "name": "detector",
        "url": model.as_uri(),
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "labels_url": labels.as_uri(),
        "labels_sha256": hashlib.sha256(labels.read_bytes()).hexdigest(),
    }
    city = folder / "city.yml"
    city.write_text(
        json.dumps({"edge_daemon_models": [spec], "edge_daemon_detector_model": "detector"})
    )
    return {"EDGE_IMAGE_VARS": str(city)}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    require_root()
    for name in ("mmdebstrap", "mkfs.ext4", "sfdisk", "bmaptool", "nft", "qemu-system-x86_64"):
        tool(name)
    out = tmp_path_factory.mktemp("image")
    city = _city_vars(tmp_path_factory.mktemp("city"))
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    image_util.build_stage(TARGET, "unpack", out)
    seconds["rootfs+unpack"] = time.monotonic() - t0
    t0 = time.monotonic()
    image_util.build_stage(TARGET, "wheels", out, env_extra=city)
    seconds["wheels"] = time.monotonic() - t0
    t0 = time.monotonic()
    first = image_util.provision(TARGET, out, env_extra=city)
    seconds["provision-1"] = time.monotonic() - t0
    t0 = time.monotonic()
    second = image_util.provision(TARGET, out, env_extra=city)
    seconds["provision-2"] = time.monotonic() - t0
    yield Built(out / TARGET, first, second, seconds, Path(city["EDGE_IMAGE_VARS"]))
    print(f"\nimage timings (s): {json.dumps({k: round(v) for k, v in seconds.items()})}")
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def sealed(built: Built) -> Built:
    t0 = time.monotonic()
    image_util.build_stage(TARGET, "seal", built.out.parent)
    built.seconds["seal"] = time.monotonic() - t0
    return built


def _chroot(root: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, timeout=120)


# -- provisioning -------------------------------------------------------------------------------


def test_second_provisioning_changes_nothing(built: Built) -> None:
    assert built.first.failed == 0 and built.first.changed > 10, built.first.log[-3000:]
    assert built.second.failed == 0
    changed = [ln for ln in built.second.log.splitlines() if ln.startswith("changed:")]
    assert built.second.changed == 0, "\n".join(changed) + built.second.log[-3000:]


# -- offline checks of the provisioned root -----------------------------------------------------


def test_sysctl_file_sets_bp028_values(built: Built) -> None:
    text = (built.root / "etc/sysctl.d/60-edge-hardening.conf").read_text()
    settings = dict(
        (k.strip(), v.strip())
        for k, v in (
            ln.split("=", 1) for ln in text.splitlines() if "=" in ln and not ln.startswith("#")
        )
    )
    for key, value in {
        "kernel.kptr_restrict": "2",
        "kernel.dmesg_restrict": "1",
        "kernel.yama.ptrace_scope": "2",
        "kernel.unprivileged_bpf_disabled": "1",
        "kernel.sysrq": "0",
        "fs.suid_dumpable": "0",
        "net.ipv4.ip_forward": "0",
        "net.ipv4.conf.all.rp_filter": "1",
        "net.ipv4.conf.all.accept_redirects": "0",
        "net.ipv4.tcp_syncookies": "1",
        "net.ipv6.conf.all.disable_ipv6": "1",
    }.items():
        assert settings.get(key) == value, key


def _kernel(root: Path) -> str:
    versions = sorted(p.name for p in (root / "lib/modules").iterdir())
    assert versions
    return versions[-1]


def test_no_radio_module_can_be_loaded(built: Built) -> None:
    """modprobe itself, run on the image's modules and configuration, refuses every radio."""
    modprobe = tool("modprobe")
    kver = _kernel(built.root)
    base = built.root / "lib/modules" / kver / "kernel"
    names = sorted(
        {p.name.split(".ko")[0] for d in RADIO_DIRS for p in (base / d).rglob("*.ko*")}
        | {"usb_storage", "firewire_core", "thunderbolt", "sctp", "dccp"}
    )
    assert len(names) > 100, "the Debian kernel ships many radio drivers; none found?"
    loadable = []
    for name in names:
        proc = subprocess.run(
            [
                modprobe,
                "-n",
                "-v",
                "-d",
                str(built.root),
                "-C",
                str(built.root / "etc/modprobe.d"),
                "-S",
                kver,
                name,
            ],
            capture_output=True,
            text=True,
        )
        # Dependencies load first (usbcore, libarc4: not radios); the module itself comes last
        # and must be refused, as must every radio module on the way.
        lines = proc.stdout.strip().splitlines()
        radio_insmod = [
            ln for ln in lines if ln.startswith("insmod") and any(d in ln for d in RADIO_DIRS)
        ]
        if not lines or lines[-1].strip() != "install /bin/false" or radio_insmod:
            loadable.append(f"{name}: {proc.stdout.strip()} {proc.stderr.strip()}")
    assert not loadable, "\n".join(loadable[:20])


def test_firewall_ruleset_loads_and_denies_by_default(built: Built) -> None:
    nft = tool("nft")
    ruleset = built.root / "etc/nftables.conf"
    proc = subprocess.run([nft, "-c", "-f", str(ruleset)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = ruleset.read_text()
    for chain in ("input", "output", "forward"):
        block = text.split(f"chain {chain} {{", 1)[1].split("}", 1)[0]
        assert "policy drop;" in block, chain
    # The one CSU endpoint of the profile, and sshd only from the management network.
    assert "192.0.2.10 . 8443" in text
    assert "ip saddr @management tcp dport 22" in text


def test_units_verify(built: Built) -> None:
    analyze = tool("systemd-analyze")
    units = [
        "edged.service",
        "edge-firstboot.service",
        "edge-selfcheck.service",
        "edge-rfkill.service",
        "edge-dot1x-enrolled.path",
    ]
    proc = subprocess.run(
        [analyze, "verify", f"--root={built.root}", *units],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "edged" not in proc.stderr, proc.stderr


def test_systemd_arms_the_hardware_watchdog(built: Built) -> None:
    """systemd's own reading of the manager configuration (system.conf and its drop-ins, in
    their order: the last assignment wins) arms the hardware watchdog, and its own time-span
    parser reads the values as 30 s and 10 min."""
    analyze = tool("systemd-analyze")
    proc = subprocess.run(
        [analyze, "cat-config", "systemd/system.conf", f"--root={built.root}", "--no-pager"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "/etc/systemd/system.conf.d/50-edge-watchdog.conf" in proc.stdout, proc.stdout
    settings: dict[str, str] = {}
    section = ""
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Manager]" and "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    for key, micros in {"RuntimeWatchdogSec": 30_000_000, "RebootWatchdogSec": 600_000_000}.items():
        assert key in settings, f"{key} is not set: {settings}"
        span = subprocess.run(
            [analyze, "timespan", settings[key]], capture_output=True, text=True, timeout=60
        )
        assert span.returncode == 0, span.stderr
        assert re.search(rf"μs: {micros}$", span.stdout, re.M), (key, span.stdout)


def test_gpio_chips_go_to_the_group_edged_runs_as(built: Built) -> None:
    """Debian leaves /dev/gpiochip* to root: without the role's udev rule, edged (user and
    group edge) could not open the chip of a relay or a door switch on a real unit."""
    unit = (built.root / "etc/systemd/system/edged.service").read_text()
    group = re.search(r"^Group=(\S+)$", unit, re.M)
    assert group, "edged.service names no group"
    groups = {line.split(":")[0] for line in (built.root / "etc/group").read_text().splitlines()}
    assert group[1] in groups
    rule = built.root / "etc/udev/rules.d/60-edge-gpio.rules"
    assert rule.stat().st_mode & 0o777 == 0o644
    [line] = [x for x in rule.read_text().splitlines() if x and not x.startswith("#")]
    keys = dict(re.findall(r'(\w+)=?="([^"]*)"', line))
    assert keys == {
        "SUBSYSTEM": "gpio", "KERNEL": "gpiochip[0-9]*", "GROUP": group[1], "MODE": "0660"
    }, line  # fmt: skip


def test_edged_exposure_with_drop_ins_is_at_most_2(built: Built) -> None:
    analyze = tool("systemd-analyze")
    proc = subprocess.run(
        [
            analyze,
            "security",
            "--offline=true",
            f"--root={built.root}",
            "--threshold=20",
            "--no-pager",
            "edged.service",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"Overall exposure level for edged.service: ([\d.]+)", proc.stdout)
    assert match and float(match[1]) <= 2.0, proc.stdout[-2000:]


def test_sshd_configuration_is_valid_and_key_only(built: Built) -> None:
    root = built.root
    key = root / "tmp/sshd-test-key"
    key.unlink(missing_ok=True)
    (root / "run/sshd").mkdir(parents=True, exist_ok=True)
    try:
        assert (
            _chroot(
                root, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/tmp/sshd-test-key"
            ).returncode
            == 0
        )
        check = _chroot(
            root, "/usr/sbin/sshd", "-t", "-f", "/etc/ssh/sshd_config", "-h", "/tmp/sshd-test-key"
        )
        assert check.returncode == 0, check.stderr
        dump = _chroot(
            root, "/usr/sbin/sshd", "-T", "-f", "/etc/ssh/sshd_config", "-h", "/tmp/sshd-test-key"
        )
        effective = dict(ln.split(" ", 1) for ln in dump.stdout.splitlines() if " " in ln)
    finally:
        for path in root.glob("tmp/sshd-test-key*"):
            path.unlink()
    assert effective["permitrootlogin"] == "no"
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["authenticationmethods"] == "publickey"
    assert effective["allowtcpforwarding"] == "no"


def test_no_password_no_console_no_baked_secret(built: Built) -> None:
    root = built.root
    for line in (root / "etc/shadow").read_text().splitlines():
        user, password = line.split(":")[:2]
        assert password.startswith(("!", "*")), f"{user} has a usable password"
    for unit in ("getty.target", "serial-getty@.service", "getty@.service", "debug-shell.service"):
        assert (root / "etc/systemd/system" / unit).readlink() == Path("/dev/null"), unit
    assert not list(root.glob("etc/ssh/ssh_host_*")), "host keys must be made at first boot"
    assert not (root / "var/lib/edge/keys").exists(), "unit keys must be made at first boot"


def test_daemon_configuration_passes_the_schema(built: Built) -> None:
    proc = _chroot(
        built.root, "/opt/edge/venv/bin/edgectl", "config", "check", "/etc/edge/edge.toml"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mode = (built.root / "etc/edge/edge.toml").stat().st_mode & 0o777
    assert mode == 0o640


def test_pinned_model_is_installed_and_the_detector_points_at_it(built: Built) -> None:
    city = json.loads(built.city.read_text())
    (spec,) = city["edge_daemon_models"]
    model = built.root / "opt/edge/models/detector.tflite"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == spec["sha256"]
    assert model.stat().st_mode & 0o777 == 0o644 and model.stat().st_uid == 0
    labels = built.root / "opt/edge/models/detector.labels"
    assert labels.read_text().split() == MODEL_LABELS
    with (built.root / "etc/edge/edge.toml").open("rb") as f:
        detector = tomllib.load(f)["analytics"]["detector"]
    assert detector == {
        "model_path": "/opt/edge/models/detector.tflite",
        "model_sha256": spec["sha256"],
        "labels": MODEL_LABELS,
        "layout": "ssd",
    }
    # The unit's own schema reads the section as written (the parsed, effective configuration).
    proc = _chroot(
        built.root,
        "/opt/edge/venv/bin/edgectl",
        "config",
        "show",
        "--config",
        "/etc/edge/edge.toml",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    effective = json.loads(proc.stdout)["config"]["analytics"]["detector"]
    assert effective["model_path"] == "/opt/edge/models/detector.tflite"
    assert effective["model_sha256"] == spec["sha256"] and effective["labels"] == MODEL_LABELS


def test_supplicant_configuration_waits_for_enrolment(built: Built) -> None:
    conf = (built.root / "etc/wpa_supplicant/wpa_supplicant-wired-eth0.conf").read_text()
    assert "eap=TLS" in conf and "ap_scan=0" in conf
    assert 'domain_suffix_match="radius.example.org"' in conf
    assert 'client_cert="/var/lib/edge/keys/unit-tls.crt"' in conf
    drop_in = built.root / "etc/systemd/system/wpa_supplicant-wired@eth0.service.d/10-edge.conf"
    assert "ConditionPathExists=/var/lib/edge/keys/unit-tls.crt" in drop_in.read_text()


# -- the sealed image ---------------------------------------------------------------------------


def test_sealed_image_layout_bmap_and_manifest(sealed: Built) -> None:
    disk = sealed.out / f"edge-{TARGET}.img"
    table = json.loads(
        subprocess.run(
            [tool("sfdisk"), "--json", str(disk)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    assert [p["name"] for p in table["partitions"]] == ["edge-root-a", "edge-root-b", "edge-data"]
    bmap = ET.parse(disk.with_suffix(".bmap")).getroot()
    assert int(bmap.findtext("ImageSize") or 0) == disk.stat().st_size
    mapped, total = (
        int(bmap.findtext("MappedBlocksCount") or 0),
        int(bmap.findtext("BlocksCount") or 0),
    )
    assert 0 < mapped < total  # slot B and free space are not written when flashing
    manifest = json.loads((sealed.out / f"edge-{TARGET}.manifest.json").read_text())
    debs = {p["name"]: p["version"] for p in manifest["debian_packages"]}
    assert {"linux-image-amd64", "systemd", "nftables", "chrony", "python3"} <= set(debs)
    pys = {p["name"]: p["version"] for p in manifest["python_packages"]}
    assert pys.get("edge") and pys.get("av") and pys.get("cryptography")
    assert manifest["source_date_epoch"] > 0
    assert not (sealed.root / "etc/apt/sources.list.d").exists() or not any(
        (sealed.root / "etc/apt/sources.list.d").iterdir()
    ), "the build machine's package sources must not ship"
    assert (sealed.root / "etc/machine-id").read_text() == ""


def test_image_boots_into_edged_behind_the_firewall(sealed: Built) -> None:
    report = image_util.boot(TARGET, sealed.out, timeout=600)
    print(f"\nboot to power-off: {report.seconds:.0f} s")
    assert report.finished, report.console[-5000:]
    assert report.powered_off, report.console[-3000:]
    assert report.one("system") == "running", report.facts.get("failed-unit")
    assert "failed-unit" not in report.facts
    assert report.one("edged").startswith("active"), report.facts.get("edged-log")
    assert report.one("edged-restarts") == "0"
    assert report.one("edged-user") == "edge"
    assert report.one("edged-apparmor") == "edged (enforce)"
    assert report.one("apparmor-denials") == "0", report.facts.get("apparmor-denial")
    assert report.one("firewall-policy") == "policy drop / policy drop"
    # Allowed by the profile: sshd (management VLAN) and the DHCP client. Nothing else.
    assert image_util.listening_ports(report.facts.get("listen", [])) <= {("tcp", 22), ("udp", 68)}
    assert report.one("sysctl-mismatch") == ""
    assert report.one("root-mount").split()[1].split(",")[0] == "ro"
    assert "nodev" in report.one("var-mount") and "noexec" in report.one("var-mount")
    # The disk was 1 GiB larger than the image: first boot gave it to the data partition.
    firstboot = [ln for ln in report.console.splitlines() if "edge-firstboot" in ln]
    assert int(report.one("var-size-mib")) > 1200, "\n".join(firstboot)
    assert report.one("getty") == "0"
    # systemd armed QEMU's i6300ESB and pets it (with -no-reboot, a reset would end the run).
    device, state, timeout = report.one("watchdog").split(" / ")
    assert (device, state, timeout) == ("i6300ESB timer", "active", "timeout 30"), report.facts.get(
        "watchdog"
    )
    runtime, reboot, pinged = report.one("watchdog-systemd").split(" / ")
    assert (runtime, reboot) == ("30s", "10min")
    assert int(pinged.removeprefix("pinged ")) > 0, pinged
    assert report.one("passwords") == ""
    assert report.one("cfg80211").startswith("install /bin/false")
    keys = set(report.one("keys").split())
    assert keys >= {"unit-signing.pem", "unit-tls.key", "unit-tls.csr", "unit-signing.csr"}
    assert report.one("enrolled") == "no"
    # The roles reach edged as real unprivileged users in their groups (#11 item 19).
    assert report.one("run-edge") == "711 edge:edge"
    assert report.one("control-maint") == "ok / preview denied"
    install_status, _, install_preview = report.one("control-install").partition(" / preview ")
    assert install_status == "ok"
    assert install_preview == "ok" or (
        install_preview.startswith("error:") and "not running" not in install_preview
    ), install_preview
    assert report.one("control-stranger") == "denied"
    # The analytics process confined itself under edged's own system-call filter (#11 item 21).
    assert report.one("analytics-sandbox").startswith("analytics process confined: landlock ABI"), (
        report.facts.get("analytics-log")
    )

"""Signed A/B updates judged by the real ``rauc`` (Debian's 1.8): bundles built as ``make image``
builds them, ``edgectl update install`` refusing what it must, installing into a file-backed
slot through a real RAUC service, and ``mark-good`` only after a real edged's self-test.

The RAUC service runs on a private D-Bus system bus, in its own mount namespace where
``/proc/cmdline`` says which slot booted (``rauc.slot=A``). Verity bundles are checked in full
(``rauc extract`` verifies the hash tree in user space); installing one needs dm-verity, which
this machine's kernel lacks, so the install test uses the same bundle in RAUC's plain format.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from edge import __version__, updates
from edge.csu.ca import VideoCA
from image import bundle as image_bundle

from .conftest import REPO, require_root, tool
from .daemon_util import running_edged, write_config
from .test_provision import audit_records, baseline
from .test_provision import sockdir as sockdir

TARGET = "qemu-amd64"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True, text=True, timeout=180, check=False, cwd=REPO,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


class Rig:
    """A city CA with its update signer, a unit's RAUC configuration and two slot files."""

    def __init__(self, tmp: Path) -> None:
        tool("rauc")
        self.tmp = tmp
        self.ca = VideoCA.init(tmp / "ca")
        self.signer = self.issue(tmp / "ca", "update-signer", "update")
        self.keyring = tmp / "keyring.pem"
        self.keyring.write_bytes(self.ca.chain_pem)
        self.slot_a, self.slot_b = tmp / "slot-a.img", tmp / "slot-b.img"
        for slot in (self.slot_a, self.slot_b):
            with slot.open("wb") as f:
                f.truncate(8 << 20)
        self.conf = tmp / "system.conf"
        self.conf.write_text(
            f"[system]\ncompatible={image_bundle.compatible(TARGET)}\nbootloader=noop\n"
            f"data-directory={tmp / 'rauc-state'}\n\n"
            f"[keyring]\npath={self.keyring}\ncheck-purpose=codesign\n\n"
            f"[slot.rootfs.0]\ndevice={self.slot_a}\ntype=raw\nbootname=A\n\n"
            f"[slot.rootfs.1]\ndevice={self.slot_b}\ntype=raw\nbootname=B\n"
        )
        tree = tmp / "root-tree"
        (tree / "etc").mkdir(parents=True)
        (tree / "etc" / "edge-release").write_text("a root file system\n")
        (tree / "payload.bin").write_bytes(os.urandom(1 << 20))  # squashfs must not be tiny
        self.root_img = tmp / "edge-root-a.img"
        subprocess.run(
            [tool("mkfs.ext4"), "-q", "-F", "-d", str(tree), str(self.root_img), "4M"],
            check=True,
        )

    def issue(self, ca_dir: Path, name: str, profile: str) -> tuple[Path, Path]:
        out = self.tmp / name
        made = cli("edge.csu.main", "ca", "issue", str(ca_dir), name, "--profile", profile,
                   "--out", str(out))  # fmt: skip
        assert made.returncode == 0, made.stderr
        return out.with_name(name + ".crt"), out.with_name(name + ".key")

    def bundle(
        self,
        version: str,
        *,
        signer: tuple[Path, Path] | None = None,
        fmt: str = "verity",
        downgrade: bool = False,
        name: str | None = None,
    ) -> Path:
        cert, key = signer or self.signer
        return image_bundle.build_bundle(
            self.root_img,
            self.tmp / (name or f"edge-{version}-{fmt}.raucb"),
            target_name=TARGET,
            version=version,
            cert=cert,
            key=key,
            downgrade=downgrade,
            fmt=fmt,
        )


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_the_image_bundle_is_a_signed_verity_bundle_rauc_accepts(rig: Rig) -> None:
    bundle = rig.bundle("9.1.0")
    info = subprocess.run(
        [tool("rauc"), f"--conf={rig.conf}", "info", "--output-format=json", str(bundle)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    doc = json.loads(info.stdout)
    assert (doc["compatible"], doc["version"]) == ("edge-qemu-amd64", "9.1.0")
    assert doc["images"][0]["rootfs"]["size"] == rig.root_img.stat().st_size
    checked = updates.check_bundle(bundle, conf=rig.conf, work_dir=rig.tmp / "work")
    assert (checked.version, checked.compatible, checked.downgrade) == (
        "9.1.0",
        doc["compatible"],
        False,
    )
    assert "CN = update-signer" in checked.signer
    # The signer's certificate, as the CMS signature carries it (checked against the CRL).
    signer = x509.load_pem_x509_certificate(rig.signer[0].read_bytes())
    assert [c.serial_number for c in checked.certificates] == [signer.serial_number]
    assert not list((rig.tmp / "work").iterdir()), "the extracted payload is left behind"
    # The verity format, as RAUC reads it from the signed manifest.
    manifest = subprocess.run(
        [tool("rauc"), f"--conf={rig.conf}", "info", str(bundle)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "Bundle Format: \tverity" in manifest, manifest
    assert "Verity Hash:" in manifest


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("foreign key", "not signed by the city's update key"),
        ("flipped byte", "damaged or was altered after signing"),
        ("unsigned", "not a signed update bundle"),
        ("wrong purpose", "not the city's update signer"),
        ("downgrade", "older than the running"),
        ("signed downgrade without --downgrade", "confirm it with --downgrade"),
        ("same version", "is the one running"),
    ],
)
def test_edgectl_update_install_refuses(
    rig: Rig, tmp_path: Path, data_dir: Path, case: str, words: str
) -> None:
    newer = "99.0.0"
    if case == "foreign key":
        other = VideoCA.init(tmp_path / "other-ca")
        bundle = rig.bundle(newer, signer=rig.issue(other.directory, "impostor", "update"))
    elif case == "flipped byte":
        bundle = rig.bundle(newer)
        with bundle.open("r+b") as f:
            f.seek(200_000)
            byte = f.read(1)
            f.seek(200_000)
            f.write(bytes([byte[0] ^ 0x01]))
    elif case == "unsigned":
        content = tmp_path / "content"
        content.mkdir()
        (content / "manifest.raucm").write_text(image_bundle.manifest(TARGET, newer))
        (content / "root.ext4").write_bytes(rig.root_img.read_bytes())
        bundle = tmp_path / "unsigned.raucb"
        subprocess.run([tool("mksquashfs"), str(content), str(bundle), "-quiet"], check=True)
    elif case == "wrong purpose":
        bundle = rig.bundle(newer, signer=rig.issue(rig.tmp / "ca", "city-config", "config"))
    elif case == "downgrade":
        bundle = rig.bundle("0.0.1")
    elif case == "signed downgrade without --downgrade":
        bundle = rig.bundle("0.0.1", downgrade=True)
    else:
        bundle = rig.bundle(__version__)
    config = write_config(tmp_path / "edge.toml", data_dir)
    (data_dir / "keys").mkdir(exist_ok=True)
    from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key

    load_or_create_signing_key(keys_dir_of(data_dir))
    result = cli("edge.cli.main", "update", "install", "--config", str(config),
                 "--rauc-conf", str(rig.conf), str(bundle))  # fmt: skip
    assert result.returncode != 0, result.stdout
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert rig.slot_b.read_bytes() == bytes(8 << 20), "the inactive slot was written"
    last = json.loads((data_dir / "update" / "last-update.json").read_text())
    assert last["result"] == "refused" and words in last["reason"]
    audit = [json.loads(x) for x in (data_dir / "vault" / "audit.log").read_text().splitlines()]
    assert audit[-1]["action"] == "update-refused" and words in audit[-1]["details"]["reason"]


# --- a real RAUC service -------------------------------------------------------------------------

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="de.pengutronix.rauc"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def rauc_service(rig: Rig) -> Iterator[dict[str, str]]:
    """A RAUC service for ``rig`` on a private system bus; yields the environment to reach it."""
    with running_rauc_service(rig.tmp, rig.conf) as env:
        yield env


@contextlib.contextmanager
def running_rauc_service(
    tmp: Path, conf: Path, cmdline: str = "rauc.slot=A quiet"
) -> Iterator[dict[str, str]]:
    """A RAUC service for ``conf`` on a private system bus, seeing ``cmdline`` as the kernel's
    command line (the slot that booted); yields the environment to reach it."""
    bus = tmp / "bus.sock"
    bus.unlink(missing_ok=True)
    (tmp / "bus.conf").write_text(BUS_CONF.format(socket=bus))
    (tmp / "cmdline").write_text(cmdline + "\n")
    daemon = subprocess.Popen(
        [tool("dbus-daemon"), f"--config-file={tmp / 'bus.conf'}", "--nofork"],
        stdout=subprocess.DEVNULL,
    )
    env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={bus}"}
    log = (tmp / "rauc-service.log").open("wb")
    service = None
    try:
        deadline = time.monotonic() + 10
        while not bus.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        service = subprocess.Popen(
            [tool("unshare"), "--mount", "sh", "-c",
             f'mount --bind "{tmp / "cmdline"}" /proc/cmdline && '
             f'exec rauc --conf="{conf}" service'],
            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            up = subprocess.run(
                [tool("busctl"), "--address", env["DBUS_SYSTEM_BUS_ADDRESS"], "status",
                 "de.pengutronix.rauc"],
                capture_output=True, check=False,
            )  # fmt: skip
            if up.returncode == 0:
                break
            assert service.poll() is None, (tmp / "rauc-service.log").read_text()
            assert time.monotonic() < deadline, "the RAUC service did not come up"
            time.sleep(0.1)
        yield env
    finally:
        for proc in (service, daemon):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        log.close()


def _slot_status(rig: Rig, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [tool("rauc"), f"--conf={rig.conf}", "status", "--output-format=json", "--detailed"],
        capture_output=True, text=True, check=True, env={**os.environ, **env},
    ).stdout  # fmt: skip
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_install_writes_the_inactive_slot_and_mark_good_waits_for_the_self_test(
    rig: Rig, rauc_service: dict[str, str], tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    config = write_config(
        tmp_path / "edge.toml", data_dir, extra=f'\n[control]\nsocket = "{sockdir}/control.sock"\n'
    )
    newer = rig.bundle("99.0.0", fmt="plain")
    # Before edged ever ran: no confirmation without a READY edged and its self-test.
    early = cli("edge.cli.main", "update", "mark-good", "--config", str(config), "--wait", "2",
                "--rauc-conf", str(rig.conf), env=rauc_service)  # fmt: skip
    assert early.returncode == 1 and "slot not confirmed: edged not ready" in early.stderr
    with running_edged(config, tmp_path) as (_proc, notify):
        notify.wait_for("READY=1", 30)
        started = time.monotonic()
        done = cli("edge.cli.main", "update", "install", "--config", str(config),
                   "--rauc-conf", str(rig.conf), str(newer), env=rauc_service)  # fmt: skip
        took = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr
        assert "installed 99.0.0 into the inactive slot" in done.stdout
        # RAUC wrote slot B (the inactive one) with the root image, byte for byte.
        image = rig.root_img.read_bytes()
        assert rig.slot_b.read_bytes()[: len(image)] == image
        assert rig.slot_a.read_bytes() == bytes(8 << 20)
        last = json.loads((data_dir / "update" / "last-update.json").read_text())
        assert (last["result"], last["version"], last["from_version"]) == (
            "installed",
            "99.0.0",
            __version__,
        )
        good = cli("edge.cli.main", "update", "mark-good", "--config", str(config),
                   "--rauc-conf", str(rig.conf), env=rauc_service)  # fmt: skip
        assert good.returncode == 0, good.stderr
        assert "is kept" in good.stdout
        # RAUC's own word (the noop boot loader keeps no boot state to read back).
        assert "marked slot rootfs.0 as good" in good.stdout, good.stdout
        # Nothing switched slots (noop boot loader, no reboot): the unit still runs the old
        # version in slot A, which is exactly a roll-back, and the status says so.
        assert "update rolled back: the unit booted" in good.stderr, good.stderr
        report = json.loads(
            cli("edge.cli.main", "status", "--json", "--config", str(config)).stdout
        )
        findings = [f for f in report["findings"] if f["section"] == "update"]
        assert findings and findings[0]["level"] == "WARN", report["findings"]
        assert f"update to 99.0.0 rolled back: running {__version__}" in findings[0]["summary"]
    slots = _slot_status(rig, rauc_service)
    assert slots["booted"] == "A" and slots["compatible"] == "edge-qemu-amd64"
    last = json.loads((data_dir / "update" / "last-update.json").read_text())
    assert (last["result"], last["version"], last["running"]) == (
        "rolled-back",
        "99.0.0",
        __version__,
    )
    actions = [
        json.loads(x)["action"] for x in (data_dir / "vault" / "audit.log").read_text().splitlines()
    ]
    assert actions.count("update-installed") == 1 and actions.count("update-rolled-back") == 1
    assert actions.index("update-installed") < actions.index("update-rolled-back")
    print(f"install of a {newer.stat().st_size >> 10} KiB bundle: {took:.1f} s")


def test_a_signed_downgrade_installs_only_when_confirmed(
    rig: Rig, rauc_service: dict[str, str], tmp_path: Path, data_dir: Path
) -> None:
    config = write_config(tmp_path / "edge.toml", data_dir)
    from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key

    load_or_create_signing_key(keys_dir_of(data_dir))
    older = rig.bundle("0.0.1", fmt="plain", downgrade=True)
    done = cli("edge.cli.main", "update", "install", "--config", str(config), "--downgrade",
               "--rauc-conf", str(rig.conf), str(older), env=rauc_service)  # fmt: skip
    assert done.returncode == 0, done.stderr
    image = rig.root_img.read_bytes()
    assert rig.slot_b.read_bytes()[: len(image)] == image


def test_the_unit_fetches_the_bundle_the_csu_offers_over_mutual_tls_and_installs_it(
    rig: Rig, rauc_service: dict[str, str], tmp_path: Path
) -> None:
    from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key

    from .test_uplink_e2e import unit_config
    from .uplink_util import free_port, make_csu, unit_files

    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    data_dir = tmp_path / "unit"
    unit_files(csu, "test-unit", data_dir)
    csu.enroll("test-unit", load_or_create_signing_key(keys_dir_of(data_dir)))
    config = unit_config(
        tmp_path / "edge.toml", data_dir, csu, port,
        uplink=f'ca_file = "{data_dir / "keys" / "ca.pem"}"',
    )  # fmt: skip
    bundle = rig.bundle("99.0.0", fmt="plain")
    offered = cli("edge.csu.main", "fleet", "offer", str(bundle), "--version", "99.0.0",
                  "--config", str(csu.config))  # fmt: skip
    assert offered.returncode == 0, offered.stderr
    fetch = ["edge.cli.main", "update", "fetch", "--install", "--config", str(config),
             "--rauc-conf", str(rig.conf)]  # fmt: skip
    csu.start()
    try:
        # Altered at the CSU after it was offered: refused on arrival, nothing kept.
        copy = csu.directory / "updates" / bundle.name
        raw = bytearray(copy.read_bytes())
        raw[50_000] ^= 0x01
        copy.write_bytes(bytes(raw))
        altered = cli(*fetch, env=rauc_service)
        assert altered.returncode != 0 and "does not match the CSU's offer" in altered.stderr
        assert not list((data_dir / "update" / "download").iterdir())
        assert rig.slot_b.read_bytes() == bytes(8 << 20)
        # Offered again, intact: fetched over the unit's mutual TLS, checked, installed.
        assert cli("edge.csu.main", "fleet", "offer", str(bundle), "--version", "99.0.0",
                   "--config", str(csu.config)).returncode == 0  # fmt: skip
        done = cli(*fetch, env=rauc_service)
    finally:
        csu.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fetched edge-99.0.0-plain.raucb (99.0.0" in done.stdout
    assert "installed 99.0.0 into the inactive slot" in done.stdout
    image = rig.root_img.read_bytes()
    assert rig.slot_b.read_bytes()[: len(image)] == image
    log = (data_dir / "vault" / "audit.log").read_text()
    actions = [json.loads(line)["action"] for line in log.splitlines()]
    assert actions[-2:] == ["update-fetched", "update-installed"], actions


def test_a_bundle_whose_signer_the_city_revoked_is_refused_once_the_crl_arrives(
    rig: Rig, rauc_service: dict[str, str], tmp_path: Path, data_dir: Path
) -> None:
    """The city CRL the unit holds (offered to it as edged's uplink does) refuses a bundle
    signed by a revoked certificate: accepted before the list arrives, refused by a stale list
    (it stays in force) and by a current one, naming the serial and the CRL; another signer
    of the same city passes the same list. A damaged list is said, and checks nothing."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from edge.csu.ca import RevocationReason
    from edge.identity.revocation import CityCrl, path_in
    from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key

    config = write_config(tmp_path / "edge.toml", data_dir)
    load_or_create_signing_key(keys_dir_of(data_dir))
    (data_dir / "keys" / "ca.pem").write_bytes(rig.ca.chain_pem)  # the city CA, as enrolled
    city = CityCrl(path_in(data_dir), x509.load_pem_x509_certificates(rig.ca.chain_pem))
    serial = x509.load_pem_x509_certificate(rig.signer[0].read_bytes()).serial_number

    def install(version: str, signer: tuple[Path, Path] | None = None) -> Any:
        bundle = rig.bundle(version, fmt="plain", signer=signer)
        return cli("edge.cli.main", "update", "install", "--config", str(config),
                   "--rauc-conf", str(rig.conf), str(bundle), env=rauc_service)  # fmt: skip

    def last_audit() -> dict[str, Any]:
        records = (data_dir / "vault" / "audit.log").read_text().splitlines()
        record: dict[str, Any] = json.loads(records[-1])
        return record

    before = install("99.0.0")
    assert before.returncode == 0, before.stdout + before.stderr
    assert "city CRL: none on this unit" in before.stdout
    assert last_audit()["details"]["crl"]["state"] == "none"
    empty = bytes(8 << 20)
    rig.slot_b.write_bytes(empty)

    # Revoked eight days ago; the list, issued then, is past its next update (stale).
    now = dt.datetime.now(dt.UTC)
    stale = rig.ca.revoke(serial, RevocationReason.SUPERSEDED, now=now - dt.timedelta(days=8))
    assert city.offer(stale.public_bytes(Encoding.PEM), now) is not None
    refused = install("99.0.1")
    assert refused.returncode != 0, refused.stdout
    assert "Traceback" not in refused.stderr
    assert (
        f"refused: the signer's certificate update-signer (serial {serial:x}) is revoked on the "
        f"city CRL {path_in(data_dir)}"
    ) in refused.stderr, refused.stderr
    assert "revoked (superseded)" in refused.stderr and "before this installation" in (
        refused.stderr
    )
    assert "past it: still in force" in refused.stdout, refused.stdout
    assert rig.slot_b.read_bytes() == empty, "the inactive slot was written"
    record = last_audit()
    assert (
        record["action"] == "update-refused"
        and f"serial {serial:x}" in (record["details"]["reason"])
    )
    assert (record["details"]["crl"]["state"], record["details"]["crl"]["revoked"]) == ("stale", 1)
    last = json.loads((data_dir / "update" / "last-update.json").read_text())
    assert last["result"] == "refused" and f"serial {serial:x}" in last["reason"]

    # A current list: still refused; another update signer of the city passes it.
    assert city.offer(rig.ca.publish_crl(now=now).public_bytes(Encoding.PEM), now) is not None
    again = install("99.0.2")
    assert again.returncode != 0 and f"(serial {serial:x}) is revoked" in again.stderr
    assert last_audit()["details"]["crl"]["state"] == "current"
    other = install("99.0.3", signer=rig.issue(rig.tmp / "ca", "update-signer-2", "update"))
    assert other.returncode == 0, other.stdout + other.stderr
    assert "city CRL " in other.stdout and "1 revoked" in other.stdout
    image = rig.root_img.read_bytes()
    assert rig.slot_b.read_bytes()[: len(image)] == image
    assert last_audit()["action"] == "update-installed"

    # A damaged copy is not loaded (as edged does): said, nothing checked.
    path_in(data_dir).write_bytes(path_in(data_dir).read_bytes()[:100])
    status = cli("edge.cli.main", "update", "status", "--json", "--config", str(config))
    crl = json.loads(status.stdout)["crl"]
    assert crl["state"] == "damaged" and "not a CRL" in crl["reason"], crl


def test_a_bundle_the_csu_offers_is_refused_when_its_signer_is_revoked_on_the_units_crl(
    rig: Rig, rauc_service: dict[str, str], tmp_path: Path
) -> None:
    """The CSU-offered path (``update fetch --install``) checks the same list as ``install``."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from edge.csu.ca import RevocationReason
    from edge.identity.revocation import CityCrl, path_in
    from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key

    from .test_uplink_e2e import unit_config
    from .uplink_util import free_port, make_csu, unit_files

    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    data_dir = tmp_path / "unit"
    unit_files(csu, "test-unit", data_dir)
    csu.enroll("test-unit", load_or_create_signing_key(keys_dir_of(data_dir)))
    config = unit_config(
        tmp_path / "edge.toml", data_dir, csu, port,
        uplink=f'ca_file = "{data_dir / "keys" / "ca.pem"}"',
    )  # fmt: skip
    # The city CA that issued the unit's certificate also issues the update signer.
    city = csu.pki.ca
    rig.keyring.write_bytes(city.chain_pem)
    signer = rig.issue(city.directory, "city-update", "update")
    bundle = rig.bundle("99.0.0", fmt="plain", signer=signer)
    serial = x509.load_pem_x509_certificate(signer[0].read_bytes()).serial_number
    crl = city.revoke(serial, RevocationReason.KEY_COMPROMISE)
    held = CityCrl(path_in(data_dir), x509.load_pem_x509_certificates(city.chain_pem))
    assert held.offer(crl.public_bytes(Encoding.PEM), dt.datetime.now(dt.UTC)) is not None
    offered = cli("edge.csu.main", "fleet", "offer", str(bundle), "--version", "99.0.0",
                  "--config", str(csu.config))  # fmt: skip
    assert offered.returncode == 0, offered.stderr
    csu.start()
    try:
        done = cli("edge.cli.main", "update", "fetch", "--install", "--config", str(config),
                   "--rauc-conf", str(rig.conf), env=rauc_service)  # fmt: skip
    finally:
        csu.stop()
    assert "fetched edge-99.0.0-plain.raucb" in done.stdout, done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"city-update (serial {serial:x}) is revoked on the city CRL" in done.stderr
    assert "revoked for key compromise" in done.stderr, done.stderr
    assert rig.slot_b.read_bytes() == bytes(8 << 20), "the inactive slot was written"
    log = (data_dir / "vault" / "audit.log").read_text()
    actions = [json.loads(line)["action"] for line in log.splitlines()]
    assert actions[-2:] == ["update-fetched", "update-refused"], actions


@pytest.mark.parametrize(
    ("last", "running", "expected"),
    [
        (None, "0.2.0", None),
        ({"result": "good", "version": "0.2.0"}, "0.2.0", None),
        ({"result": "installed", "version": "0.2.0"}, "0.2.0", "good"),
        ({"result": "installed", "version": "0.2.0"}, "0.1.0", "rolled-back"),
        ({"result": "refused", "version": "0.3.0"}, "0.1.0", None),
    ],
)
def test_a_passing_self_test_confirms_or_names_the_roll_back(
    last: dict[str, Any] | None, running: str, expected: str | None
) -> None:
    outcome = updates.confirmation(last, running, "B")
    assert (outcome or {}).get("result") == expected
    if expected == "rolled-back":
        assert outcome is not None
        assert outcome["reason"] == "the unit booted 0.1.0 (slot B), not the installed 0.2.0"


@pytest.mark.parametrize(
    ("newer", "older"),
    [
        ("0.10.0", "0.9.2"),
        ("1.0", "1.0rc1"),
        ("1.0.1", "1.0"),
        ("2", "1.99.99"),
        ("1.0.post1", "1.0"),
    ],
)
def test_versions_order_as_people_read_them(newer: str, older: str) -> None:
    assert updates.version_key(newer) > updates.version_key(older)
    assert updates.version_key("1.0") == updates.version_key("1.0.0")


def test_mark_good_keeps_an_update_installed_before_provisioning(
    rig: Rig, rauc_service: dict[str, str], tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    """A unit updated before an installer gave it an identity: its healthy unprovisioned
    edged (READY, answering, its self-test of what it has passing) confirms the slot."""
    config = baseline(tmp_path, data_dir, sockdir)
    mark_good = ("edge.cli.main", "update", "mark-good", "--config", str(config), "--wait", "60",
                 "--rauc-conf", str(rig.conf))  # fmt: skip
    with running_edged(config, tmp_path) as (_proc, notify):
        notify.wait_for("STATUS=unprovisioned", 30)
        done = cli("edge.cli.main", "update", "install", "--config", str(config),
                   "--rauc-conf", str(rig.conf), str(rig.bundle("99.0.0", fmt="plain")),
                   env=rauc_service)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        good = cli(*mark_good, env=rauc_service)
        assert good.returncode == 0, good.stdout + good.stderr
        assert "marked slot rootfs.0 as good" in good.stdout, good.stdout
        assert "unprovisioned: checked what it has, storage passed, signing key passed" in (
            good.stdout
        )
        # Its signing key gone (a damaged data partition): the self-test fails, no confirmation.
        (data_dir / "keys" / "unit-signing.pem").unlink()
        bad = cli(*mark_good, env=rauc_service)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "slot not confirmed: self-test failed: signing key:" in bad.stderr
    actions = [(r["action"], r["device"]) for r in audit_records(data_dir)]
    assert ("update-installed", "unprovisioned") in actions, actions
    assert ("update-rolled-back", "unprovisioned") in actions, actions  # noop boot loader
    assert ("control:selftest", "unprovisioned") in actions, actions


def test_a_roll_back_is_named_with_the_reason_the_new_slot_gave() -> None:
    failed = {
        "result": "not-confirmed",
        "version": "0.2.0",
        "reason": "edged not ready: it failed to start 4 times",
    }
    back = updates.rolled_back(failed, "0.1.0", "A")
    assert back is not None and back["result"] == "rolled-back"
    assert back["reason"] == (
        "the unit booted 0.1.0 (slot A), not the installed 0.2.0; "
        "on its slot: edged not ready: it failed to start 4 times"
    )
    assert updates.on_probation(failed, "0.2.0") and not updates.on_probation(failed, "0.1.0")
    assert updates.rolled_back({"result": "good", "version": "0.2.0"}, "0.1.0", "A") is None
    # Installed during this boot, with a boot loader that switches at the next: nothing to say.
    installed = {"result": "installed", "version": "0.2.0", "boot_id": "this-boot"}
    assert updates.awaiting_reboot(installed, "this-boot", "grub")
    assert not updates.awaiting_reboot(installed, "another-boot", "grub")
    assert not updates.awaiting_reboot(installed, "this-boot", "noop")


def test_an_unhealthy_slot_on_probation_exits_3_for_the_reboot(
    rig: Rig, tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    """The version running is the one installed and not confirmed yet: edged not answering
    makes mark-good exit 3 (edge-update-confirm.service fails: systemd reboots, the boot loader
    counts the attempt); the same failure on a slot with nothing pending exits 1."""
    # A control socket of its own: an edged of anything else on this machine must not answer.
    config = write_config(
        tmp_path / "edge.toml", data_dir, extra=f'\n[control]\nsocket = "{sockdir}/control.sock"\n'
    )
    (data_dir / "update").mkdir()
    pending = {"result": "installed", "version": __version__, "from_version": "0.0.1"}
    (data_dir / "update" / "last-update.json").write_text(json.dumps(pending))
    on_probation = cli("edge.cli.main", "update", "mark-good", "--config", str(config),
                       "--wait", "2", "--rauc-conf", str(rig.conf))  # fmt: skip
    assert on_probation.returncode == 3, on_probation.stderr
    assert "slot not confirmed: edged not ready" in on_probation.stderr
    last = json.loads((data_dir / "update" / "last-update.json").read_text())
    assert (last["result"], last["version"]) == ("not-confirmed", __version__)
    (data_dir / "update" / "last-update.json").unlink()
    settled = cli("edge.cli.main", "update", "mark-good", "--config", str(config),
                  "--wait", "2", "--rauc-conf", str(rig.conf))  # fmt: skip
    assert settled.returncode == 1 and "no update waits on it" in settled.stderr


def test_an_outcome_written_by_root_belongs_to_edged(tmp_path: Path) -> None:
    """edged reads last-update.json for its status under an AppArmor profile that reads only
    what edged owns: root's record is handed to the data directory's owner."""
    require_root()
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 4242, 4243)
    updates.record(data, {"result": "rolled-back", "version": "0.2.0"})
    for path in (data / "update", data / "update" / "last-update.json"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4242, 4243), path

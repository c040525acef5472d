"""Per-unit configuration layered over the baseline, the unprovisioned state and
``edgectl provision``, against a real edged, real keys, openssl and the signed audit log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge import config as config_mod
from edge.app.diagnostics import Level, evaluate
from edge.app.provision import ProvisionRequest, provision
from edge.errors import ConfigError, ProvisionError
from edge.identity import unitkeys
from edge.unitfile import merge, to_toml
from edge.vault.audit import check_audit

from .conftest import tool
from .daemon_util import running_edged, sealed_segments, write_config

REPO = Path(__file__).resolve().parents[1]
MAINT_GID, INSTALL_GID = 46201, 46202


def edgectl(*args: str, user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(user or []), sys.executable, "-m", "edge.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
    )


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


@pytest.fixture
def sockdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="edge-pv-"))
    path.chmod(0o755)  # the maintenance caller below is another user
    yield path
    shutil.rmtree(path, ignore_errors=True)


def baseline(tmp_path: Path, data_dir: Path, sockdir: Path) -> Path:
    """The city's baseline as an image carries it: everything but the unit's identity."""
    config = write_config(
        tmp_path / "edge.toml",
        data_dir,
        extra=f'\n[control]\nsocket = "{sockdir}/control.sock"\n'
        f"maint_group = {MAINT_GID}\ninstall_group = {INSTALL_GID}\n",
    )
    text = config.read_text()
    without_id = text.replace('id = "test-unit"\n', "")
    assert without_id != text
    config.write_text(without_id)
    return config


def status(config: Path) -> tuple[int, dict[str, Any]]:
    result = edgectl("status", "--json", "--config", str(config))
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def unit_id_reported(config: Path) -> str | None:
    """The unit id edged reports (None while it starts again)."""
    daemon = status(config)[1].get("daemon")
    return daemon["unit_id"] if daemon else None


def audit_records(data_dir: Path) -> list[dict[str, Any]]:
    log = data_dir / "vault" / "audit.log"
    return [json.loads(line) for line in log.read_text().splitlines()]


# --- layering (pure) --------------------------------------------------------------------------


BASE = """\
[unit]
data_dir = "{data}"

[vault]
demo_recipient = true
retention_days = 20
"""


def _layered(tmp_path: Path, unit_text: str) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    base = tmp_path / "edge.toml"
    base.write_text(BASE.format(data=data))
    (data / "unit.toml").write_text(unit_text)
    return base, data / "unit.toml"


def test_unit_file_is_laid_over_the_baseline(tmp_path: Path) -> None:
    base, unit = _layered(
        tmp_path,
        '[unit]\nid = "cam-nord-0042"\nsite = "rue de la Paix 12"\n\n[vault]\nepoch_seconds = 60\n'
        '\n[[cameras]]\nid = "street"\nsource = "v4l2:/dev/video0"\n',
    )
    cfg, origin = config_mod.load(base)
    assert origin == f"{base} + {unit}"
    assert config_mod.is_provisioned(cfg)
    assert (cfg.unit.id, cfg.unit.site) == ("cam-nord-0042", "rue de la Paix 12")
    # Tables merge key by key: the baseline's retention stays beside the unit's epoch length.
    assert (cfg.vault.retention_days, cfg.vault.epoch_seconds) == (20, 60)
    assert cfg.vault.demo_recipient
    # Arrays are replaced whole.
    assert [c.id for c in cfg.cameras] == ["street"]
    assert cfg.unit.data_dir == tmp_path / "data"


def test_baseline_alone_is_unprovisioned(tmp_path: Path) -> None:
    base, unit = _layered(tmp_path, "")
    unit.unlink()
    cfg, origin = config_mod.load(base)
    assert origin == str(base)
    assert not config_mod.is_provisioned(cfg)
    # --data-dir moves where the unit file is looked for too.
    other = tmp_path / "other"
    other.mkdir()
    (other / "unit.toml").write_text('[unit]\nid = "u-7"\n')
    cfg, origin = config_mod.load(base, data_dir=other)
    assert config_mod.is_provisioned(cfg) and cfg.unit.id == "u-7"
    assert config_mod.is_provisioned(config_mod.with_data_dir(cfg, other))


@pytest.mark.parametrize(
    ("unit_text", "where", "key", "words"),
    [
        ('[unit]\nid = "u-1"\n\n[[cameras]]\nid = "cam1"\nfps = 500\n', "unit", "cameras[0].fps",
         "less than or equal to 120"),
        ('[unit]\nid = "u-1"\n\n[vault]\nretention_days = 40\n', "unit", "vault.retention_days",
         "legal limit"),
        ('[unit]\nid = "u-1"\ndata_dir = "/elsewhere"\n', "unit", "unit.data_dir",
         "baseline"),
        ('[unit]\nid = "u-1"\n\n[uplink]\nbogus = 1\n', "unit", "uplink.bogus", "unknown key"),
        ('[unit]\nid = "U 1"\n', "unit", "unit.id", "pattern"),
        ("[unit\nid = 1\n", "unit", None, "not valid TOML"),
    ],
)  # fmt: skip
def test_unit_file_problems_name_the_unit_file_line_and_key(
    tmp_path: Path, unit_text: str, where: str, key: str | None, words: str
) -> None:
    base, unit = _layered(tmp_path, unit_text)
    with pytest.raises(ConfigError) as info:
        config_mod.load(base)
    err = info.value
    assert err.path == str(unit), err
    assert err.key == key, err
    assert err.line is not None and err.line >= 1, err
    assert words in str(err), err
    if key is not None:
        line = unit_text.splitlines()[err.line - 1]
        assert key.rsplit(".", 1)[-1].split("[")[0] in line or line.startswith("["), (line, err)


def test_baseline_problems_name_the_baseline(tmp_path: Path) -> None:
    base, _unit = _layered(tmp_path, '[unit]\nid = "u-1"\n')
    base.write_text(base.read_text() + "\n[uplink]\nbandwidth_kbps = 1\n")
    with pytest.raises(ConfigError) as info:
        config_mod.load(base)
    assert info.value.path == str(base)
    assert info.value.key == "uplink.bandwidth_kbps"
    assert base.read_text().splitlines()[info.value.line - 1].startswith("bandwidth_kbps")  # type: ignore[operator]


def test_unit_file_text_round_trips() -> None:
    doc: dict[str, Any] = {
        "unit": {"id": "cam-nord-0042", "site": 'quai "Est", n° 3'},
        "cameras": [
            {
                "id": "cam1",
                "source": "rtsp://10.0.0.5/stream",
                "fps": 12.5,
                "loop": False,
                "encoder": {"bitrate_kbps": 900},
                "privacy_masks": [
                    {"name": "window", "points": [[0.1, 0.2], [0.3, 0.2], [0.3, 0.4]]}
                ],
            },
            {"id": "cam2", "source": "picamera2"},
        ],
    }
    text = to_toml(doc, header="written by a test\n\nsecond line")
    assert text.startswith("# written by a test\n#\n# second line\n")
    assert tomllib.loads(text) == doc
    config_mod.parse(text)  # and the schema takes it
    assert merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}


def test_unprovisioned_status_is_one_failing_line() -> None:
    findings = evaluate(
        {"daemon": {"provisioned": False, "cameras": [], "last_reload": None}}  # type: ignore[typeddict-item]
    )
    daemon_findings = [f for f in findings if f.section not in ("time", "health", "storage")]
    assert [(f.section, f.level) for f in daemon_findings] == [("unit", Level.FAILING)]
    assert "edgectl provision" in findings[0].action


# --- a real edged -------------------------------------------------------------------------------


def test_fresh_unit_records_nothing_until_provisioned_then_records_under_its_identity(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    openssl = tool("openssl")
    config = baseline(tmp_path, data_dir, sockdir)
    with running_edged(config, tmp_path) as (proc, notify):
        notify.wait_for("READY=1", 30)
        notify.wait_for("STATUS=unprovisioned", 10)
        code, report = status(config)
        daemon = report["daemon"]
        assert daemon["provisioned"] is False and daemon["unit_id"] == ""
        assert daemon["cameras"] == [] and daemon["vault"] is None
        assert code == 2  # failing: the unit records nothing
        screen = edgectl("status", "--config", str(config))
        assert "UNPROVISIONED" in screen.stdout and "(unprovisioned)" in screen.stdout, screen
        assert not sealed_segments(data_dir)
        assert not (data_dir / "vault" / "segments").exists()

        # Maintenance staff may look, not provision.
        maint = [tool("setpriv"), "--reuid=65534", "--regid=65534", f"--groups={MAINT_GID}"]
        readable = sockdir / "edge.toml"  # the test's own directory is root's alone
        shutil.copy(config, readable)
        readable.chmod(0o644)
        refused = edgectl(
            "provision", "--config", str(readable), "--data-dir", str(sockdir),
            "--unit-id", "u-0042", "--camera", "cam1=synthetic", user=maint,
        )  # fmt: skip
        assert refused.returncode != 0 and "install role" in refused.stderr, refused
        assert not (data_dir / "unit.toml").exists()

        # A request the schema refuses writes nothing and says why, naming the file and key.
        bad = edgectl(
            "provision", "--config", str(config), "--unit-id", "u-0042",
            "--camera", "cam1=ftp://nowhere",
        )  # fmt: skip
        assert bad.returncode != 0 and "cameras[0].source" in bad.stderr, bad
        assert not (data_dir / "unit.toml").exists()

        done = edgectl(
            "provision", "--config", str(config), "--unit-id", "u-0042",
            "--site", "rue de la Paix 12", "--camera", "cam1=synthetic", "--group", "nord",
            "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["unit_id"] == "u-0042" and result["replaced"] is None
        unit_toml = tomllib.loads((data_dir / "unit.toml").read_text())
        assert unit_toml["unit"] == {
            "id": "u-0042",
            "site": "rue de la Paix 12",
            "groups": ["nord"],
        }
        # Enrolment ran for the new identity: both requests name it (openssl judges).
        for csr in ("unit-tls.csr", "unit-signing.csr"):
            subject = subprocess.run(
                [openssl, "req", "-noout", "-subject", "-verify", "-in",
                 str(data_dir / "keys" / csr)],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            assert "CN=u-0042" in subject.replace(" ", ""), subject

        # edged starts again under the identity, in the same process, and records.
        wait_until(lambda: sealed_segments(data_dir), 60, "segments under the new identity")
        assert proc.poll() is None
        wait_until(lambda: unit_id_reported(config) == "u-0042", 30, "unit u-0042")
        assert status(config)[1]["daemon"]["provisioned"] is True

        records = audit_records(data_dir)
        provisioned = [r for r in records if r["action"] == "provisioned"]
        assert len(provisioned) == 1
        assert provisioned[0]["device"] == "u-0042"
        assert provisioned[0]["details"]["cameras"] == ["cam1"]
        assert provisioned[0]["details"]["unit_file_sha256"] == result["unit_file_sha256"]
        assert provisioned[0]["actor"].startswith("uid=0")
    check = edgectl("audit", "--config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr


def test_two_units_flashed_from_one_image_get_two_identities(tmp_path: Path, sockdir: Path) -> None:
    """The city flashes one image onto many cards: each unit reads the same baseline (here it
    differs only by where this test mounts each card's data partition and its control socket)
    and becomes itself only through its installer. Two identities, two signing keys, two
    certificate requests each naming its own unit; the baseline is never written."""
    openssl = tool("openssl")
    image = baseline(tmp_path / "image", tmp_path / "card", sockdir).read_text()
    keys: dict[str, bytes] = {}
    for name in ("cab-nord-0001", "cab-sud-0002"):
        card = tmp_path / name / "data"
        card.mkdir(parents=True)
        sock = Path(tempfile.mkdtemp(prefix="edge-pv-"))
        config = tmp_path / name / "edge.toml"
        text = image.replace(str(tmp_path / "card"), str(card)).replace(str(sockdir), str(sock))
        config.write_text(text)
        try:
            with running_edged(config, tmp_path / name) as (proc, notify):
                notify.wait_for("STATUS=unprovisioned", 30)
                done = edgectl(
                    "provision", "--config", str(config), "--unit-id", name,
                    "--camera", "cam1=synthetic",
                )  # fmt: skip
                assert done.returncode == 0, done.stderr
                wait_until(lambda: unit_id_reported(config) == name, 30, f"unit {name}")  # noqa: B023
                assert proc.poll() is None
        finally:
            shutil.rmtree(sock, ignore_errors=True)
        assert config.read_text() == text  # the image's file: read, never written
        assert tomllib.loads((card / "unit.toml").read_text())["unit"]["id"] == name
        public = unitkeys.load_signing_public_key(unitkeys.keys_dir_of(card))
        keys[name] = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        for csr in ("unit-tls.csr", "unit-signing.csr"):
            subject = subprocess.run(
                [openssl, "req", "-noout", "-subject", "-verify", "-in",
                 str(unitkeys.keys_dir_of(card) / csr)],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            assert f"CN={name}" in subject.replace(" ", ""), subject
    assert len(set(keys.values())) == 2, "two units from one image share a signing key"


def test_a_provisioned_unit_keeps_its_identity_unless_typed_again_and_keys_are_never_replaced(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    config = baseline(tmp_path, data_dir, sockdir)
    with running_edged(config, tmp_path) as (proc, notify):
        notify.wait_for("READY=1", 30)
        first = edgectl(
            "provision", "--config", str(config), "--unit-id", "u-1", "--camera", "cam1=synthetic"
        )
        assert first.returncode == 0, first.stderr
        wait_until(lambda: unit_id_reported(config) == "u-1", 60, "unit u-1")
        keys = {p.name: p.read_bytes() for p in (data_dir / "keys").iterdir() if "key" in p.name
                or p.suffix == ".pem"}  # fmt: skip
        assert "unit-signing.pem" in keys and "unit-tls.key" in keys, sorted(keys)
        unit_file = (data_dir / "unit.toml").read_bytes()

        for typed in (None, "u-2", "U-1"):
            args = ["provision", "--config", str(config), "--unit-id", "u-2",
                    "--camera", "cam1=synthetic"]  # fmt: skip
            if typed is not None:
                args += ["--replace-identity", typed]
            refused = edgectl(*args)
            assert refused.returncode != 0, refused
            assert "already provisioned as 'u-1'" in refused.stderr, refused.stderr
            assert "--replace-identity u-1" in refused.stderr
            assert (data_dir / "unit.toml").read_bytes() == unit_file

        replaced = edgectl(
            "provision", "--config", str(config), "--unit-id", "u-2",
            "--camera", "cam1=synthetic", "--replace-identity", "u-1",
        )  # fmt: skip
        assert replaced.returncode == 0, replaced.stderr
        assert "was u-1" in replaced.stdout
        wait_until(lambda: unit_id_reported(config) == "u-2", 60, "unit u-2")
        kept = list(data_dir.glob("unit.toml.u-1.*"))
        assert len(kept) == 1 and kept[0].read_bytes() == unit_file
        for name, data in keys.items():
            assert (data_dir / "keys" / name).read_bytes() == data, f"{name} was replaced"
        assert proc.poll() is None

    actions = [(r["action"], r["device"]) for r in audit_records(data_dir)]
    assert actions.count(("provision-refused", "u-1")) == 3, actions
    # Written by the unit as it was (u-1), naming what it becomes.
    last = [r for r in audit_records(data_dir) if r["action"] == "provisioned"][-1]
    assert (last["device"], last["details"]["unit_id"], last["details"]["replaced"]) == (
        "u-1",
        "u-2",
        "u-1",
    )
    assert actions[-1][1] == "u-2", actions  # and then records under its new identity
    refusal = next(r for r in audit_records(data_dir) if r["action"] == "provision-refused")
    assert (
        refusal["details"]["unit_id"] == "u-2"
        and "already provisioned" in refusal["details"]["reason"]
    )
    key = data_dir / "keys" / "unit-signing.pem"
    assert key.exists()
    result = check_audit(data_dir / "vault" / "audit.log", _public_key(key))
    assert not result.problems, result.problems


def _public_key(private_pem: Path) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(private_pem.read_bytes(), password=None).public_key()


def test_edged_without_configuration_runs_the_demo_only_when_asked(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge.app.daemon", "--config", str(tmp_path / "none.toml"),
         "--run-for", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 78, result.stderr
    assert "none.toml" in result.stderr and "cannot read" in result.stderr


def test_provisioning_without_cameras_keeps_the_baselines_and_never_the_synthetic_default(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    base = tmp_path / "edge.toml"
    base.write_text(BASE.format(data=data))
    running, _origin = config_mod.load(base)
    request = ProvisionRequest.from_params({"unit_id": "u-9", "cameras": []})
    with pytest.raises(ProvisionError, match="names no camera"):
        provision(request, running=running, baseline=base)
    assert not (data / "unit.toml").exists() and not (data / "keys").exists()

    base.write_text(base.read_text() + '\n[[cameras]]\nid = "street"\nsource = "picamera2"\n')
    done = provision(request, running=running, baseline=base)
    cfg, _origin = config_mod.load(base)
    assert (cfg.unit.id, [c.id for c in cfg.cameras]) == ("u-9", ["street"])
    assert done.unit_file == data / "unit.toml"
    assert "cameras" not in tomllib.loads(done.unit_file.read_text())

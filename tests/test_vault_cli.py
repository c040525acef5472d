"""edgectl verify/export/audit and edge-csu keygen/open as users run them; the outbox API;
the unit's key files; time arguments."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from edge import config
from edge.cli.main import main as edgectl
from edge.config import RecipientKem
from edge.csu.main import main as edge_csu
from edge.errors import ConfigError, IntegrityError
from edge.unitkeys import load_or_create_signing_key, load_signing_public_key
from edge.vault import layout
from edge.vault.base import OutboxKind
from edge.vault.keys import load_private, load_public
from edge.vault.store import Vault
from edge.vault.timespec import parse_time, resolve_range
from edge.vault.verify import ChainVerifier

from .vault_support import SEG_NS, fake_segment, make_csu, open_vault
from .video_support import WALL0


@pytest.mark.parametrize("kem", list(RecipientKem))
def test_keygen(kem: RecipientKem, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert edge_csu(["keygen", "--out", str(tmp_path / "k"), "--kem", kem.value]) == 0
    key, pub = tmp_path / "k" / "csu.key.json", tmp_path / "k" / "csu.pub.json"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "private" not in json.loads(pub.read_text())
    assert load_private(key).public.raw == load_public(pub).raw
    assert "vault.csu_public_key" in capsys.readouterr().out


def test_unit_signing_key_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    key = load_or_create_signing_key(keys)
    path = keys / "unit-signing.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_or_create_signing_key(keys).public_key() == key.public_key()
    assert load_signing_public_key(keys) == key.public_key()
    path.chmod(0o644)
    load_or_create_signing_key(keys)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_time_arguments() -> None:
    now = 1_800_000_000 * 10**9
    assert parse_time("now", now) == now
    assert parse_time("-10s", now) == now - 10 * 10**9
    assert parse_time("-2h", now) == now - 7200 * 10**9
    assert parse_time("@1700000000", now) == 1_700_000_000 * 10**9
    assert parse_time("2026-11-28T14:05:00Z", now) == 1_795_874_700 * 10**9
    assert resolve_range(None, None, "5m", now) == (now - 300 * 10**9, now)
    with pytest.raises(ConfigError, match="after --from"):
        resolve_range("-1m", "-2m", None, now)
    with pytest.raises(ConfigError, match="ISO 8601"):
        parse_time("yesterday", now)


@pytest.fixture
def unit(tmp_path: Path) -> tuple[Path, Path]:
    """A unit configured from a file, with 10 fake segments recorded through from_config."""
    csu = make_csu(tmp_path / "csu", RecipientKem.MLKEM768_X25519)
    data = tmp_path / "data"
    cfg_path = tmp_path / "edge.toml"
    cfg_path.write_text(
        f'[unit]\nid = "unit-7"\ndata_dir = "{data}"\n\n[vault]\ncsu_public_key = "{csu.pub}"\n'
    )
    cfg, _ = config.load(cfg_path)
    vault = Vault.from_config(cfg, background=False)
    for n in range(10):
        vault.write(fake_segment("cam1", n))
    vault.close()
    return cfg_path, csu.key


def test_verify_export_audit_open(
    unit: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, key = unit
    assert edgectl(["verify", "--config", str(cfg), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["cameras"]["cam1"]["segments_ok"] == 10
    start, end = f"@{(WALL0 + 2 * SEG_NS) / 1e9}", f"@{(WALL0 + 5 * SEG_NS) / 1e9}"
    assert edgectl(["verify", "--config", str(cfg), "--from", start, "--to", end]) == 0
    assert "3 segment(s) verified (#2..#4)" in capsys.readouterr().out
    out = tmp_path / "bundle"
    args = ["export", "--config", str(cfg), "--from", start, "--to", end, "--case", "PV-77"]
    assert edgectl([*args, "--out", str(out)]) == 0
    assert "3 segment(s)" in capsys.readouterr().out
    assert edgectl([*args, "--out", str(out)]) == 2  # never overwrites a bundle
    assert "not empty" in capsys.readouterr().err
    assert edgectl(["audit", "--config", str(cfg), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # the refused second export is audited too (it used to leave no trace)
    actions = [r["action"] for r in records]
    assert actions == ["vault-open", "verify", "verify", "export", "export-failed"]
    assert "not empty" in records[-1]["details"]["reason"]
    assert records[-1]["details"]["case"] == "PV-77"
    export = records[-2]
    assert export["details"]["case"] == "PV-77" and export["details"]["segments"] == 3
    assert export["actor"]  # the unix user
    manifest = (out / "manifest.json").read_bytes()
    import hashlib

    assert export["details"]["bundle_sha256"] == hashlib.sha256(manifest).hexdigest()
    clip = tmp_path / "clip.mp4"
    # The fake payload is no video: opening verifies and decrypts, then remuxing must fail.
    pin = ["--unit-key", str(config.load(cfg)[0].unit.data_dir / "keys" / "unit-signing.pub.pem")]
    code = edge_csu(["open", str(out), "--key", str(key), "--out", str(clip), *pin])
    assert code == 2 and not clip.exists()
    other = make_csu(tmp_path / "other", RecipientKem.MLKEM768_X25519)
    code = edge_csu(["open", str(out), "--key", str(other.key), "--out", str(clip), *pin])
    assert code == 1
    assert "not sealed to this key" in capsys.readouterr().out


def test_audit_log_tamper_detected(
    unit: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _key = unit
    assert edgectl(["verify", "--config", str(cfg)]) == 0
    log = tmp_log = Path(config.load(cfg)[0].unit.data_dir) / "vault" / "audit.log"
    lines = log.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2
    log.write_bytes(lines[1])  # the first record removed
    capsys.readouterr()
    assert edgectl(["audit", "--config", str(cfg)]) == 1
    assert "chain broken" in capsys.readouterr().err
    tmp_log.write_bytes(lines[0] + lines[1].replace(b'"verify"', b'"verifx"'))
    assert edgectl(["audit", "--config", str(cfg)]) == 1
    assert "bad signature" in capsys.readouterr().err


def test_export_of_an_empty_range(unit: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, _ = unit
    out = str(tmp_path / "b")
    code = edgectl(
        ["export", "--config", str(cfg), "--from", "@1", "--to", "@2", "--case", "X", "--out", out]
    )
    assert code == 2


def test_file_config_without_csu_key_refused(tmp_path: Path) -> None:
    cfg = config.parse(f'[unit]\ndata_dir = "{tmp_path}"\n', path="edge.toml")
    with pytest.raises(ConfigError, match="never records unencrypted"):
        Vault.from_config(cfg, background=False)
    assert not (tmp_path / "vault").exists()


def test_outbox_order_delivery_and_restart(tmp_path: Path, data_dir: Path) -> None:
    csu = make_csu(tmp_path / "csu")
    vault = open_vault(data_dir, csu, epoch_seconds=0.0)
    for n in range(3):
        vault.write(fake_segment("cam1", n))
        vault.write(fake_segment("cam2", n, t0=WALL0 + 1))
    items = vault.outbox()
    kinds = [(i.kind, i.camera_id, i.sequence) for i in items]
    assert kinds[:4] == [
        (OutboxKind.ENVELOPE, "cam1", -1),
        (OutboxKind.SEGMENT, "cam1", 0),
        (OutboxKind.ENVELOPE, "cam2", -1),
        (OutboxKind.SEGMENT, "cam2", 0),
    ]
    assert len(items) == 12
    backlog = vault.backlog()
    assert (backlog.segments, backlog.seconds) == (6, 12.0)
    # The receiver's side: the exact bytes verify as a chain per camera.
    pub = load_signing_public_key(data_dir / "keys")
    receiver = ChainVerifier(pub, device_id="unit-1")
    for item in items:
        if item.kind is OutboxKind.SEGMENT:
            receiver.accept(item.read())
            vault.mark_delivered(item.camera_id, item.sequence)
        else:
            vault.mark_envelope_delivered(item.camera_id, item.epoch_id)
    with pytest.raises(IntegrityError, match="duplicate or replayed"):
        receiver.accept(items[1].read())
    vault.write(fake_segment("cam1", 3))
    vault.close()
    vault = open_vault(data_dir, csu)
    pending = vault.outbox()
    assert [(i.kind, i.sequence) for i in pending] == [
        (OutboxKind.ENVELOPE, -1),
        (OutboxKind.SEGMENT, 3),
    ]
    assert vault.backlog().bytes == pending[1].size
    vault.write(fake_segment("cam1", 4))
    skipped = next(i for i in vault.outbox() if i.sequence == 4)
    with pytest.raises(IntegrityError, match=r"sequences 3\.\.3 missing"):
        receiver.accept(skipped.read())
    vault.close()


def test_receiver_follows_a_retention_checkpoint(tmp_path: Path, data_dir: Path) -> None:
    csu = make_csu(tmp_path / "csu")
    vault = open_vault(data_dir, csu, max_bytes=12_000)
    for n in range(10):
        vault.write(fake_segment("cam1", n, size=2000))
    ckp_path = layout.checkpoint_path(layout.vault_dir(data_dir), "cam1")
    receiver = ChainVerifier(load_signing_public_key(data_dir / "keys"))
    ckp = receiver.accept_checkpoint(ckp_path.read_bytes())
    first = next(i for i in vault.outbox() if i.kind is OutboxKind.SEGMENT)
    assert first.sequence == ckp.purged_through + 1
    receiver.accept(first.read())
    vault.close()

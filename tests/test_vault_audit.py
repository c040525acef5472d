"""The vault's audit log under damage: a torn or garbage tail, an altered last record, a deleted
tail. Verify reports it; the next append preserves the damage in quarantine, signs a record of
it and goes on; sequence numbers are never reused."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from edge import config
from edge.cli.main import main as edgectl
from edge.config import RecipientKem
from edge.identity.unitkeys import (
    keys_dir_of,
    load_or_create_signing_key,
    load_signing_key,
    load_signing_public_key,
)
from edge.vault.audit import DAMAGE_ACTION, AuditLog, check_audit, head_path, read_audit
from edge.vault.store import Vault

from .conftest import require_root
from .vault_support import fake_segment, make_csu


@pytest.fixture
def unit(tmp_path: Path) -> tuple[Path, Path]:
    """A unit configured from a file with 4 fake segments; returns (config, audit.log)."""
    csu = make_csu(tmp_path / "csu", RecipientKem.X25519)
    data = tmp_path / "data"
    cfg_path = tmp_path / "edge.toml"
    cfg_path.write_text(
        f'[unit]\nid = "unit-7"\ndata_dir = "{data}"\n\n'
        f'[vault]\nkem = "x25519"\ncsu_public_key = "{csu.pub}"\n'
    )
    vault = Vault.from_config(config.load(cfg_path)[0], background=False)
    for n in range(4):
        vault.write(fake_segment("cam1", n))
    vault.close()
    return cfg_path, data / "vault" / "audit.log"


def _log(audit_log: Path) -> AuditLog:
    data = audit_log.parent.parent
    return AuditLog(audit_log, "unit-7", load_signing_key(keys_dir_of(data)))


def _verify_json(cfg: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = edgectl(["verify", "--config", str(cfg), "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "damage",
    [b"\x00\x00garbage from a bad sector\n", b'{"v":1,"seq":3,"time_ns":17', b"\n"],
    ids=["garbage-line", "torn-by-power-cut", "empty-line"],
)
def test_damaged_audit_tail_is_reported_preserved_signed_and_appends_go_on(
    unit: tuple[Path, Path], damage: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, log = unit
    _log(log).append("control:reload", {"n": 1})
    _log(log).append("control:reload", {"n": 2})
    good = log.read_bytes()
    log.write_bytes(good + damage)

    # verify gives its whole report with a verdict (it used to exit 2 with none)
    capsys.readouterr()
    assert edgectl(["verify", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "cam1: 4 segment(s) verified" in out
    assert "audit: audit.log:" in out and "FAILED" in out

    # verify's own record went in after the damage was quarantined and recorded
    records, problems = read_audit(log, load_signing_public_key(log.parent.parent / "keys"))
    assert problems == []
    assert [r.action for r in records][-4:] == [
        "control:reload",
        "control:reload",
        DAMAGE_ACTION,
        "verify",
    ]
    incident = records[-2]
    kept = log.parent / "quarantine" / Path(incident.details["quarantined"]).name
    assert kept.read_bytes() == damage  # preserved byte for byte, never silently dropped
    assert incident.details["sha256"] == hashlib.sha256(damage).hexdigest()
    assert incident.details["at_offset"] == len(good)
    assert [r.seq for r in records] == list(range(len(records)))  # nothing reused, no hole

    # from now on: verify passes and shows the recorded damage; appends work; export is audited
    code, report = _verify_json(cfg, capsys)
    assert code == 0 and report["ok"]
    audit = report["audit"]
    assert isinstance(audit, dict) and len(audit["recorded_incidents"]) == 1
    assert edgectl(["verify", "--config", str(cfg)]) == 0
    assert "1 damage record(s) in the audit log" in capsys.readouterr().out
    assert edgectl(["audit", "--config", str(cfg)]) == 0

    # the quarantined copy is part of the evidence: losing it is reported
    kept.unlink()
    code, report = _verify_json(cfg, capsys)
    assert code == 1 and "quarantined audit tail" in json.dumps(report["findings"])


def test_altered_last_record_is_quarantined_not_chained_onto(
    unit: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, log = unit
    _log(log).append("export", {"case": "PV-1"})
    lines = log.read_bytes().splitlines(keepends=True)
    forged = lines[-1].replace(b"PV-1", b"PV-2")
    log.write_bytes(b"".join(lines[:-1]) + forged)
    code, report = _verify_json(cfg, capsys)
    assert code == 1 and "bad signature" in json.dumps(report["findings"])
    public = load_signing_public_key(log.parent.parent / "keys")
    check = check_audit(log, public)
    assert check.problems == []
    damage = check.incidents[0]
    # the forged record's place (#1) is named as lost and its number never given again
    assert damage.details["missing_seqs"] == [1, 1]
    assert [r.seq for r in check.records] == [0, 2, 3]
    assert (
        log.parent / "quarantine" / Path(damage.details["quarantined"]).name
    ).read_bytes() == forged


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_deleted_audit_tail_is_seen(
    unit: tuple[Path, Path], cut: int, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, log = unit
    for n in range(3):
        _log(log).append("control:reload", {"n": n})
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-cut]))  # a clean cut at a line boundary
    last = len(lines) - 1
    code, report = _verify_json(cfg, capsys)
    assert code == 1
    assert f"records #{last - cut + 1}..#{last} missing" in json.dumps(report["findings"])
    # the next append records the loss and continues after the anchor: no number reused
    check = check_audit(log, load_signing_public_key(log.parent.parent / "keys"))
    assert check.problems == []
    damage = check.incidents[0]
    assert damage.details["missing_seqs"] == [last - cut + 1, last]
    assert damage.seq == last + 1 and check.records[-1].action == "verify"


def test_deleting_the_anchor_too_is_seen(
    unit: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, log = unit
    _log(log).append("control:reload", {})
    head_path(log).unlink()
    code, report = _verify_json(cfg, capsys)
    assert code == 1 and "no head anchor" in json.dumps(report["findings"])
    log.unlink()  # the whole log gone too: a vault that recorded always has one
    code, report = _verify_json(cfg, capsys)
    assert code == 1 and "missing although the vault holds recordings" in json.dumps(
        report["findings"]
    )


def test_verify_says_what_it_cannot_see(
    unit: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _ = unit
    with pytest.raises(SystemExit):
        edgectl(["verify", "--help"])
    assert "only the CSU's copy of the recordings and its receipts" in " ".join(
        capsys.readouterr().out.split()
    )
    assert edgectl(["verify", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "cannot see a whole-vault rollback" in out and out.rstrip().endswith("intact")
    code, report = _verify_json(cfg, capsys)
    assert code == 0 and "rollback" in json.dumps(report["cannot_see"])


def test_truncated_mid_record_is_seen_and_recorded(
    unit: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, log = unit
    for n in range(2):
        _log(log).append("control:reload", {"n": n})
    raw = log.read_bytes()
    log.write_bytes(raw[:-40])  # a cut in the middle of the last record
    last = len(raw.splitlines()) - 1
    code, report = _verify_json(cfg, capsys)
    findings = json.dumps(report["findings"])
    assert code == 1 and "torn record" in findings and f"#{last}..#{last} missing" in findings
    check = check_audit(log, load_signing_public_key(log.parent.parent / "keys"))
    assert check.problems == []
    damage = check.incidents[0].details
    assert (
        damage["missing_seqs"] == [last, last] and damage["bytes"] == len(raw.splitlines()[-1]) - 39
    )


def test_edged_start_records_a_damaged_tail_and_keeps_recording(unit: tuple[Path, Path]) -> None:
    cfg, log = unit
    log.write_bytes(log.read_bytes() + b"garbage")
    vault = Vault.from_config(config.load(cfg)[0], background=False)  # start-up recovery
    vault.write(fake_segment("cam1", 4))
    vault.audit.append("purge", {"segments": 0})
    vault.close()
    check = check_audit(log, load_signing_public_key(log.parent.parent / "keys"))
    assert check.problems == []
    assert [r.action for r in check.records][-3:] == [DAMAGE_ACTION, "vault-open", "purge"]


def test_root_writing_first_leaves_the_vault_to_its_owner(tmp_path: Path) -> None:
    """edgectl run by root (edge-update-confirm.service at the first boot of a fresh unit)
    writes the audit log before edged ever made its vault: the folders it makes belong to the
    data directory's owner, or edged (User=edge) could not create its vault there."""
    require_root()
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, 4242, 4243)
    key = load_or_create_signing_key(keys_dir_of(tmp_path / "keys-home"))
    log = AuditLog(data / "vault" / "audit.log", "unit-1", key)
    log.append("update-not-confirmed", {"reason": "edged runs unprovisioned"})
    vault = (data / "vault").stat()
    assert (vault.st_uid, vault.st_gid, vault.st_mode & 0o777) == (4242, 4243, 0o700)
    assert (data / "vault" / "audit.log").stat().st_uid == 4242
    records, problems = read_audit(data / "vault" / "audit.log", key.public_key())
    assert [r.action for r in records] == ["update-not-confirmed"] and not problems

"""The CSU audit log: signed records, the chain, torn lines, ``edge-csu audit verify``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu.receiver import access_log, receipts


def _audit_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "audit", "verify", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _log(tmp_path: Path, records: int = 3) -> tuple[Path, Path]:
    key_file = tmp_path / "audit-key.pem"
    log = access_log.AuditLog.with_key_file(tmp_path / "audit.jsonl", key_file)
    for n in range(records):
        log.record(f"agent-{n}", "view-live", unit="unit-a", camera="street")
    return log.path, receipts.public_path(key_file)


def _pub(path: Path) -> ed25519.Ed25519PublicKey:
    from edge.identity.unitkeys import load_public_pem

    return load_public_pem(path.read_bytes(), origin=str(path))


def test_records_are_signed_with_a_key_made_once_and_verify_prints_the_head(
    tmp_path: Path,
) -> None:
    path, pub = _log(tmp_path)
    key_file = tmp_path / "audit-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_pem = key_file.read_bytes()
    _log(tmp_path, 1)  # a second start: the same key, never overwritten
    assert key_file.read_bytes() == key_pem
    report = access_log.verify(path, _pub(pub))
    assert report.problem is None and report.count == report.signed == 4
    assert not report.unsigned_lines
    out = _audit_verify("--log", str(path), "--public-key", str(pub), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] and result["count"] == 4 and result["head"] == report.head
    text = _audit_verify("--log", str(path), "--public-key", str(pub))
    assert f"head: 4 {report.head}" in text.stdout


def test_an_edited_line_a_removed_line_and_another_key_are_refused(tmp_path: Path) -> None:
    path, pub = _log(tmp_path)
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)

    # the last line edited (no later line's chain shows it: only the signature can)
    edited = json.loads(lines[-1])
    edited["who"] = "someone-else"
    path.write_bytes(b"".join(lines[:-1]) + json.dumps(edited, sort_keys=True).encode() + b"\n")
    out = _audit_verify("--log", str(path), "--public-key", str(pub))
    assert out.returncode == 1
    assert "line 3: bad signature (record edited, or signed by another key)" in out.stdout

    # a middle line removed
    path.write_bytes(lines[0] + lines[2])
    out = _audit_verify("--log", str(path), "--public-key", str(pub))
    assert out.returncode == 1
    assert "line 2: audit chain broken (line removed or edited)" in out.stdout

    # a whole log rewritten by someone with another key: chain intact, signatures not ours
    path.write_bytes(original)
    forged = tmp_path / "forged"
    forged.mkdir()
    forged_path, forged_pub = _log(forged)
    assert _audit_verify("--log", str(forged_path), "--public-key", str(forged_pub)).returncode == 0
    out = _audit_verify("--log", str(forged_path), "--public-key", str(pub))
    assert out.returncode == 1 and "line 1: bad signature" in out.stdout


def test_a_torn_last_line_is_recorded_by_the_next_append_not_repaired(tmp_path: Path) -> None:
    path, pub = _log(tmp_path)
    whole = path.read_bytes()
    torn_at = whole.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(whole[: torn_at + 40])  # a power cut mid-append
    torn_bytes = whole[torn_at : torn_at + 40]

    pending = access_log.verify(path, _pub(pub))
    assert pending.problem is None and pending.torn == [(3, torn_at)] and pending.torn_pending
    assert len(access_log.read(path)) == 2  # the console still reads it

    log = access_log.AuditLog.with_key_file(path, tmp_path / "audit-key.pem")
    log.record("s.chef", "view-audit")
    data = path.read_bytes()
    assert data.startswith(whole[: torn_at + 40] + b"\n")  # the torn bytes kept as they were
    note = json.loads(data.splitlines()[3])
    assert note["action"] == "audit-torn-line" and note["offset"] == torn_at
    assert note["length"] == 40 and "sig" in note
    import hashlib

    assert note["sha256"] == hashlib.sha256(torn_bytes).hexdigest()

    out = _audit_verify("--log", str(path), "--public-key", str(pub))
    assert out.returncode == 0, out.stdout
    assert f"line 3: torn line at byte {torn_at}" in out.stdout
    assert [e["action"] for e in access_log.read(path)][-2:] == ["audit-torn-line", "view-audit"]

    # a middle line damaged with no torn-line record after it is forgery, not a torn line
    lines = data.splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1][:30] + b"\n" + b"".join(lines[2:]))
    out = _audit_verify("--log", str(path), "--public-key", str(pub))
    assert out.returncode == 1 and "line 2:" in out.stdout and "torn" not in out.stdout


def test_an_old_unsigned_log_stays_readable_and_is_reported_unsigned(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    access_log.AuditLog(path).record("j.martin", "view-live")
    signed = access_log.AuditLog.with_key_file(path, tmp_path / "audit-key.pem")
    signed.record("j.martin", "view-media")
    assert [("sig" in e) for e in access_log.read(path)] == [False, True]
    out = _audit_verify("--log", str(path), "--public-key", str(tmp_path / "audit-key.pub.pem"))
    assert out.returncode == 0 and "1 unsigned records (lines 1)" in out.stdout
    assert "WARNING" not in out.stdout  # written before signing began

    # an unsigned record appended after signed ones: anyone could have written it
    access_log.AuditLog(path).record("intruder", "view-live")
    pub = str(tmp_path / "audit-key.pub.pem")
    out = _audit_verify("--log", str(path), "--public-key", pub)
    assert out.returncode == 0 and "WARNING: 1 unsigned records after signing began" in out.stdout
    out = _audit_verify("--log", str(path), "--public-key", pub, "--require-signed")
    assert out.returncode == 1
    assert "line 3: unsigned record after signing began (--require-signed)" in out.stdout


def test_a_process_that_cannot_read_the_key_says_so_and_writes_unsigned() -> None:
    """The key belongs to the CSU's user; another user's command (here: nobody, through
    setpriv when run as root) still audits, unsigned, and says so on stderr."""
    with tempfile.TemporaryDirectory() as d:
        where = Path(d)
        where.chmod(0o777)  # nobody may append the log, not read the key
        key_file = where / "audit-key.pem"
        receipts.load_or_create(key_file, "audit key")
        if os.geteuid() != 0:
            key_file.chmod(0)
        script = (
            "from pathlib import Path; from edge.csu.receiver import access_log as a; "
            f"a.AuditLog.with_key_file(Path({str(where / 'audit.jsonl')!r}), "
            f"Path({str(key_file)!r})).record('nobody', 'hold-add', case='PV-1')"
        )
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        run = subprocess.run(
            [*(as_nobody if os.geteuid() == 0 else []), sys.executable, "-c", script],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert "cannot load the audit key" in run.stderr and "Permission denied" in run.stderr
        assert "records are written unsigned" in run.stderr
        [entry] = access_log.read(where / "audit.jsonl")
        assert entry["action"] == "hold-add" and "sig" not in entry


def test_holds_are_signed_and_a_damaged_audit_key_stops_the_receiver(tmp_path: Path) -> None:
    from edge.csu.receiver.holds import HoldBook

    from .uplink_util import make_csu

    csu = make_csu(tmp_path)
    retention = csu.directory / "retention"
    run = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "hold", "add", "--config", str(csu.config),
         "--case", "PV-2026-042", "--unit", "unit-a", "--from", "2026-11-29T08:00:00Z",
         "--to", "2026-11-29T09:00:00Z", "--by", "dupont"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    [entry] = HoldBook(retention).entries()
    assert entry["action"] == "hold-add" and "sig" in entry
    pub = csu.directory / "audit-key.pub.pem"
    out = _audit_verify("--log", str(retention / "holds.jsonl"), "--public-key", str(pub))
    assert out.returncode == 0 and "audit log OK: 1 records, 1 signed" in out.stdout

    # the receiver signs every record or does not start
    (csu.directory / "audit-key.pem").write_text("not a key\n")
    serve = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "serve", "--config", str(csu.config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert serve.returncode == 2, serve.stderr
    assert "audit-key.pem: cannot load the audit key" in serve.stderr

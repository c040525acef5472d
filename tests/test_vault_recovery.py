"""Start-up recovery: partial files, unindexed files, a lost or corrupt index."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.identity.unitkeys import keys_dir_of, load_signing_key, load_signing_public_key
from edge.vault import layout
from edge.vault.bundle import export_bundle
from edge.vault.verify import verify_vault

from .vault_support import Csu, fake_segment, make_csu, open_vault
from .video_support import WALL0


def _record(data: Path, csu: Csu, count: int = 6) -> None:
    vault = open_vault(data, csu, epoch_seconds=0.0)
    for n in range(count):
        vault.write(fake_segment("cam1", n))
    vault.close()


def _check(data: Path, csu: Csu, expect: int) -> None:
    vault = open_vault(data, csu)
    try:
        assert [r.sequence for r in vault.find(0, 2**62)] == list(range(expect))
        vault.write(fake_segment("cam1", expect))
        assert vault.lane("cam1").next_seq == expect + 1
    finally:
        vault.close()
    root = layout.vault_dir(data)
    report = verify_vault(root, load_signing_public_key(keys_dir_of(data)), device_id="unit-1")
    assert report.ok, [str(f) for f in report.findings]


def test_lost_index_is_rebuilt_from_the_files(tmp_path: Path, data_dir: Path) -> None:
    csu = make_csu(tmp_path / "csu")
    _record(data_dir, csu)
    root = layout.vault_dir(data_dir)
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (root / name).unlink(missing_ok=True)
    _check(data_dir, csu, 6)
    # Every epoch's envelope is indexed again: an export of the oldest segment works.
    export_bundle(
        data_dir,
        start_ns=WALL0,
        end_ns=WALL0 + 1,
        case="X",
        out_dir=tmp_path / "b",
        device_id="unit-1",
        signing_key=load_signing_key(keys_dir_of(data_dir)),
    )


def test_corrupt_index_is_quarantined_and_rebuilt(tmp_path: Path, data_dir: Path) -> None:
    csu = make_csu(tmp_path / "csu")
    _record(data_dir, csu)
    root = layout.vault_dir(data_dir)
    (root / "clean-shutdown").unlink()  # as after a power cut
    (root / "index.sqlite").write_bytes(b"SQLite format 3\0" + b"\xff" * 5000)
    _check(data_dir, csu, 6)
    assert any("index.sqlite" in p.name for p in (root / "quarantine").iterdir())


def test_unindexed_and_partial_files(tmp_path: Path, data_dir: Path) -> None:
    csu = make_csu(tmp_path / "csu")
    _record(data_dir, csu)
    root = layout.vault_dir(data_dir)
    # A crash after the rename but before the index row: the row is missing.
    vault = open_vault(data_dir, csu)
    vault.index.delete("cam1", 5)
    vault.index.delete("cam1", 4)
    vault.index.close()  # as if killed: no clean stop, no wiping
    # A crash in the middle of writing: a partial file in tmp/.
    (root / "tmp" / "120000-0000000006.seg.1.tmp").write_bytes(b"ESEG\x01partial")
    _check(data_dir, csu, 6)
    assert not list((root / "tmp").iterdir())


def test_a_file_that_does_not_continue_the_chain_is_never_accepted(
    tmp_path: Path, data_dir: Path
) -> None:
    csu = make_csu(tmp_path / "csu")
    _record(data_dir, csu)
    root = layout.vault_dir(data_dir)
    vault = open_vault(data_dir, csu)
    last = vault.find(0, 2**62)[-1]
    path = vault.path_of(last)
    vault.index.delete("cam1", last.sequence)
    vault.index.close()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    path.write_bytes(bytes(raw))
    vault = open_vault(data_dir, csu)
    try:
        assert [r.sequence for r in vault.find(0, 2**62)] == list(range(5))
        # #5 was issued once: it is never issued again; a signed gap record takes its place.
        assert [(g.first, g.last) for g in vault.recovery.gaps] == [(5, 5)]
        vault.write(fake_segment("cam1", 6))
        assert vault.lane("cam1").next_seq == 7
    finally:
        vault.close()
    assert not path.exists()
    assert len(list((root / "quarantine").iterdir())) == 1
    report = verify_vault(root, load_signing_public_key(keys_dir_of(data_dir)), device_id="unit-1")
    assert [(f.kind, f.sequence) for f in report.findings] == [("gap", 5)]


def test_self_check(tmp_path: Path, data_dir: Path) -> None:
    from edge.errors import IntegrityError
    from edge.vault.verify import self_check

    csu = make_csu(tmp_path / "csu")
    now = [WALL0 + 20 * 2_000_000_000]
    vault = open_vault(data_dir, csu, clock=lambda: now[0])
    for n in range(6):
        vault.write(fake_segment("cam1", n))
    assert "6 segment(s) of the last hour verified" in self_check(vault)
    path = vault.path_of(vault.find(0, 2**62)[2])
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(IntegrityError, match="altered: cam1#2"):
        self_check(vault)
    vault.close()


def test_failed_index_write_leaves_no_file(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.errors import VaultError

    csu = make_csu(tmp_path / "csu")
    vault = open_vault(data_dir, csu)
    vault.write(fake_segment("cam1", 0))

    def broken(_row: object) -> None:
        raise VaultError("index: disk I/O error")  # the fault injected

    monkeypatch.setattr(vault.index, "insert", broken)
    with pytest.raises(VaultError, match="disk I/O"):
        vault.write(fake_segment("cam1", 1))
    monkeypatch.undo()
    assert len(list(layout.vault_dir(data_dir).rglob("*.seg"))) == 1
    vault.write(fake_segment("cam1", 1))  # the same sequence, written afresh
    vault.close()
    _check(data_dir, csu, 2)


def test_relative_data_dir_with_a_lost_index_starts_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo default data directory is relative: a lost index must not make recovery build
    doubled paths (``edge-data/vault/edge-data/vault/segments/…``) and stop every start."""
    from edge import config

    csu = make_csu(tmp_path / "csu")
    monkeypatch.chdir(tmp_path)
    relative = Path("edge-data")
    _record(relative, csu)
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (layout.vault_dir(relative) / name).unlink(missing_ok=True)
    _check(relative, csu, 6)
    # The cause: the data directory is made absolute once, when the configuration is read
    # (a file, the embedded demo default, or --data-dir).
    cfg_path = tmp_path / "edge.toml"
    cfg_path.write_text(
        '[unit]\nid = "unit-1"\ndata_dir = "edge-data"\n'
        f'[vault]\nkem = "x25519"\ncsu_public_key = "{csu.pub}"\n'
    )
    cfg, _ = config.load(cfg_path)
    assert cfg.unit.data_dir == tmp_path / "edge-data"
    assert config.with_data_dir(cfg, Path("d/../x")).unit.data_dir == tmp_path / "x"
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    # The demo is only ever loaded when asked for (--demo); no file and no --demo is refused.
    assert config.load(None, demo=True)[0].unit.data_dir.is_absolute()
    with pytest.raises(ConfigError, match=r"no configuration at .*--demo"):
        config.load(None)
    (layout.vault_dir(relative) / "index.sqlite").unlink()
    from edge.vault.store import Vault

    vault = Vault.from_config(cfg, background=False)
    try:
        assert vault.lane("cam1").next_seq == 7
        assert vault.root == tmp_path / "edge-data" / "vault"
    finally:
        vault.close()


def test_verifying_a_whole_vault_holds_one_segment_at_a_time(
    tmp_path: Path, data_dir: Path
) -> None:
    """edgectl verify walks a month of video on a 2 GiB unit: it may keep each segment's header
    and hash, never its bytes (held, 40 segments of 256 KiB would be 10 MiB here)."""
    import tracemalloc

    csu = make_csu(tmp_path / "csu")
    vault = open_vault(data_dir, csu)
    for n in range(40):
        vault.write(fake_segment("cam1", n, size=256 * 1024))
    vault.close()
    root = layout.vault_dir(data_dir)
    public = load_signing_public_key(keys_dir_of(data_dir))
    tracemalloc.start()
    try:
        report = verify_vault(root, public, device_id="unit-1", audit=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.cameras["cam1"].segments_ok == 40
    assert peak < 3 * 1024 * 1024, f"verify held {peak / 2**20:.1f} MiB"

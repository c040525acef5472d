"""Tail damage found at start-up: sequence numbers are never issued twice, and the loss becomes
a signed gap record in the chain that verify, export and the bundle's verifier all report.

The attacker (or a failing card) deletes, truncates or flips the newest sealed segments, with
or without the index, then edged restarts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge import config
from edge.cli.main import main as edgectl
from edge.errors import IntegrityError
from edge.unitkeys import keys_dir_of, load_signing_key, load_signing_public_key
from edge.vault import format as fmt
from edge.vault import layout
from edge.vault.bundle import export_bundle, verify_bundle
from edge.vault.verify import ChainVerifier, verify_vault

from .vault_support import SEG_NS, Csu, fake_segment, make_csu, open_vault
from .video_support import WALL0

SEALED = 8


def _seal(data: Path, csu: Csu, start: int = 0, count: int = SEALED) -> None:
    vault = open_vault(data, csu, epoch_seconds=0.0)
    for n in range(start, start + count):
        vault.write(fake_segment("cam1", n))
    vault.close()


def _damage(data: Path, how: str, newest: int, *, index_too: bool) -> None:
    root = layout.vault_dir(data)
    files = sorted(root.glob("segments/cam1/*/*/*.seg"), key=lambda p: p.name[-15:])
    for path in files[-newest:]:
        raw = path.read_bytes()
        if how == "delete":
            path.unlink()
        elif how == "truncate":
            path.write_bytes(raw[: len(raw) // 3])
        else:
            flipped = bytearray(raw)
            flipped[len(raw) // 2] ^= 0x10
            path.write_bytes(bytes(flipped))
    if index_too:
        for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
            (root / name).unlink(missing_ok=True)


def _verify(data: Path) -> list[tuple[str, int | None, str]]:
    report = verify_vault(
        layout.vault_dir(data), load_signing_public_key(keys_dir_of(data)), device_id="unit-1"
    )
    return [(f.kind.value, f.sequence, f.detail) for f in report.findings]


@pytest.mark.parametrize("index_too", [False, True], ids=["index-kept", "index-lost"])
@pytest.mark.parametrize("newest", [1, 2, 3])
@pytest.mark.parametrize("how", ["delete", "truncate", "bitflip"])
def test_tail_damage_never_reuses_a_sequence_and_is_recorded(
    how: str, newest: int, index_too: bool, tmp_path: Path, data_dir: Path
) -> None:
    csu = make_csu(tmp_path / "csu")
    _seal(data_dir, csu)
    _damage(data_dir, how, newest, index_too=index_too)
    lost = (SEALED - newest, SEALED - 1)

    vault = open_vault(data_dir, csu, epoch_seconds=0.0)
    try:
        # Every sequence ever issued (0..7) stays issued: the next one is 8, not 8 - newest.
        assert vault.lane("cam1").next_seq == SEALED
        assert [(g.first, g.last) for g in vault.recovery.gaps] == [lost]
        for n in range(SEALED, SEALED + 2):
            vault.write(fake_segment("cam1", n))
    finally:
        vault.close()
    root = layout.vault_dir(data_dir)
    gap_file = layout.gap_path(root, "cam1", *lost)
    gap = fmt.verify_gap(gap_file.read_bytes(), load_signing_public_key(keys_dir_of(data_dir)))
    assert (gap.camera_id, gap.first, gap.last) == ("cam1", *lost)
    # The chain goes on through the record: segment 8 carries the record's hash.
    seg8 = next(root.glob(f"segments/cam1/*/*/*-{SEALED:010d}.seg"))
    assert fmt.parse_segment(seg8.read_bytes()).header.prev_hash == gap.chain_hash
    # verify: exactly one problem, the loss, named; no chain break, nothing else.
    findings = _verify(data_dir)
    assert [(k, s) for k, s, _ in findings] == [("gap", lost[0])], findings
    assert f"sequences {lost[0]}..{lost[1]} lost" in findings[0][2]
    # A restart finds nothing new: no second record, the sequence goes on.
    vault = open_vault(data_dir, csu)
    try:
        assert vault.lane("cam1").next_seq == SEALED + 2 and not vault.recovery.gaps
    finally:
        vault.close()
    # Export over the loss: the record travels in the bundle and its verifier names it.
    result = export_bundle(
        data_dir,
        start_ns=WALL0,
        end_ns=WALL0 + (SEALED + 2) * SEG_NS,
        case="PV-1",
        out_dir=tmp_path / "bundle",
        device_id="unit-1",
        signing_key=load_signing_key(keys_dir_of(data_dir)),
    )
    assert result.segments == SEALED + 2 - newest
    assert [g.split(":")[0] for g in result.gaps] == ["cam1"]
    assert f"sequences {lost[0]}..{lost[1]} lost" in result.gaps[0]
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert [(g["first_sequence"], g["last_sequence"]) for g in manifest["gaps"]] == [lost]
    verified = verify_bundle(
        tmp_path / "bundle", unit_public_key=load_signing_public_key(keys_dir_of(data_dir))
    )
    assert [(g.first, g.last) for g in verified.gaps] == [lost]


def test_loss_after_a_loss_chains_records_and_survives_a_lost_high_water_mark(
    tmp_path: Path, data_dir: Path
) -> None:
    """A second loss after the first: records chain one after the other. Removing the
    high-water mark file does not lower anything the index still knows."""
    csu = make_csu(tmp_path / "csu")
    _seal(data_dir, csu)
    _damage(data_dir, "delete", 2, index_too=True)
    _seal(data_dir, csu, SEALED, 3)  # 8, 9, 10 after the gap 6..7
    _damage(data_dir, "delete", 2, index_too=False)  # 9, 10 gone
    root = layout.vault_dir(data_dir)
    layout.high_water_path(root, "cam1").unlink()  # the index still has rows 9 and 10
    vault = open_vault(data_dir, csu)
    try:
        assert [(g.first, g.last) for g in vault.recovery.gaps] == [(9, 10)]
        vault.write(fake_segment("cam1", 11))
    finally:
        vault.close()
    findings = _verify(data_dir)
    assert [(k, s) for k, s, _ in findings] == [("gap", 6), ("gap", 9)], findings


def test_edgectl_verify_and_export_name_the_gap(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csu = make_csu(tmp_path / "csu")
    _seal(data_dir, csu)
    _damage(data_dir, "bitflip", 2, index_too=False)
    _seal(data_dir, csu, SEALED, 2)
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[unit]\nid = "unit-1"\ndata_dir = "{data_dir}"\n\n'
        f'[vault]\nkem = "x25519"\ncsu_public_key = "{csu.pub}"\n'
    )
    assert config.load(cfg)[0].unit.data_dir == data_dir
    capsys.readouterr()
    assert edgectl(["verify", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "gap: cam1#6: sequences 6..7 lost before a restart" in out
    assert "chain" not in out.replace("chain intact", "")
    assert edgectl(["verify", "--config", str(cfg), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["cameras"]["cam1"]["lost_sequences"] == [[6, 7]]
    start, end = f"@{(WALL0 + 4 * SEG_NS) / 1e9}", f"@{(WALL0 + 10 * SEG_NS) / 1e9}"
    args = ["export", "--config", str(cfg), "--from", start, "--to", end, "--case", "PV-9"]
    assert edgectl([*args, "--out", str(tmp_path / "b")]) == 0
    assert "LOSS RECORDED" in capsys.readouterr().out


def test_retention_purges_a_gap_record_with_the_segments_around_it(
    tmp_path: Path, data_dir: Path
) -> None:
    csu = make_csu(tmp_path / "csu")
    _seal(data_dir, csu)
    _damage(data_dir, "delete", 2, index_too=False)
    _seal(data_dir, csu, SEALED, 2)
    root = layout.vault_dir(data_dir)
    assert layout.gap_files(root, "cam1")
    later = WALL0 + 40 * 86_400 * 10**9
    vault = open_vault(data_dir, csu, retention_days=1, clock=lambda: later)
    try:
        assert vault.purge().count == SEALED  # 0..5 and 8..9; 6..7 were lost
        assert not layout.gap_files(root, "cam1")
        vault.write(fake_segment("cam1", SEALED + 2, t0=later))
        assert vault.lane("cam1").next_seq == SEALED + 3
    finally:
        vault.close()
    assert _verify(data_dir) == []


def test_csu_store_accepts_the_chain_through_a_gap_record_and_counts_it_as_lost(
    tmp_path: Path, data_dir: Path
) -> None:
    """The CSU never got #4..#5 and the unit lost them: the gap record is stored, #6 chains
    through it, and the camera's status shows the loss as recorded, not as a hole. A record
    with an absurd range (signed by the unit's key) costs nothing to judge."""
    import time

    from edge.csu.receiver.store import SegmentStore, Verdict

    csu = make_csu(tmp_path / "csu")
    _seal(data_dir, csu, 0, 6)
    root = layout.vault_dir(data_dir)
    key = load_signing_public_key(keys_dir_of(data_dir))
    store = SegmentStore(tmp_path / "storage")

    def segment(seq: int) -> bytes:
        return next(root.glob(f"segments/cam1/*/*/*-{seq:010d}.seg")).read_bytes()

    for seq in range(4):
        assert store.accept_segment("unit-1", "cam1", seq, segment(seq), key)[0] is Verdict.STORED
    _damage(data_dir, "delete", 2, index_too=False)
    _seal(data_dir, csu, 6, 1)
    raw = layout.gap_path(root, "cam1", 4, 5).read_bytes()
    assert store.accept_gap("unit-1", "cam1", 4, 5, raw, key) == (Verdict.STORED, [])
    assert store.accept_gap("unit-1", "cam1", 4, 5, raw, key) == (Verdict.DUPLICATE, [])
    assert store.accept_segment("unit-1", "cam1", 6, segment(6), key)[0] is Verdict.STORED
    chain = ChainVerifier(key, "unit-1")  # the same judgement, one record at a time
    for seq in range(4):
        chain.accept(segment(seq))
    with pytest.raises(IntegrityError, match="missing"):
        chain.accept(segment(6))
    chain.accept_gap(raw)
    chain.accept(segment(6))
    status = SegmentStore(tmp_path / "storage").camera("unit-1", "cam1").status()  # reloaded
    assert status["gaps"] == [] and status["lost_at_unit"] == [[4, 5]]
    assert status["conflicts"] == [] and status["chain"] == "complete, losses recorded by the unit"
    huge = fmt.GapRecord("unit-1", "cam1", WALL0, 8, 2**62, 0, bytes(32), "forged")
    raw = fmt.sign_gap(huge, load_signing_key(keys_dir_of(data_dir)))
    t0 = time.monotonic()
    assert store.accept_gap("unit-1", "cam1", 8, 2**62, raw, key)[1] == []
    store.camera("unit-1", "cam1").status()
    assert time.monotonic() - t0 < 1.0

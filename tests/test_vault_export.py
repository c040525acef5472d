"""Exports over damaged ranges, as an officer and the CSU meet them: what is intact is exported,
the damaged part is named in the signed manifest and in what ``edge-csu open`` prints, the exit
status says "partial"; failed and interrupted exports are audited and leave nothing behind."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from edge import config
from edge.cli.main import main as edgectl
from edge.config import RecipientKem
from edge.csu.main import main as edge_csu
from edge.errors import IntegrityError, VaultError
from edge.unitkeys import keys_dir_of, load_signing_key, load_signing_public_key
from edge.vault import format as fmt
from edge.vault import layout
from edge.vault.audit import read_audit
from edge.vault.bundle import _DOMAIN, export_bundle, verify_bundle
from edge.vault.store import Vault

from .conftest import tool
from .vault_support import Csu, encoded_segments, make_csu, open_vault

Unit = tuple[Path, Path, Csu]


@pytest.fixture
def unit(tmp_path: Path) -> Unit:
    """A unit configured from a file that recorded 5 real 1 s H.264 segments (10 frames each)."""
    csu = make_csu(tmp_path / "csu", RecipientKem.X25519)
    data = tmp_path / "data"
    cfg_path = tmp_path / "edge.toml"
    cfg_path.write_text(
        f'[unit]\nid = "unit-7"\ndata_dir = "{data}"\n\n'
        f'[vault]\nkem = "x25519"\ncsu_public_key = "{csu.pub}"\n'
    )
    vault = Vault.from_config(config.load(cfg_path)[0], background=False)
    for seg in encoded_segments(seconds=5.0):
        vault.write(seg)
    vault.close()
    return cfg_path, data, csu


def _segment_file(data: Path, sequence: int) -> Path:
    root = layout.vault_dir(data)
    return next(root.glob(f"segments/cam1/*/*/*-{sequence:010d}.seg"))


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def _drop_row(data: Path) -> None:
    db = sqlite3.connect(layout.vault_dir(data) / "index.sqlite")
    with db:
        db.execute("DELETE FROM segments WHERE camera = 'cam1' AND seq = 2")
    db.close()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "bit flipped": (lambda d: _flip(_segment_file(d, 2)), "altered"),
    "file deleted": (lambda d: _segment_file(d, 2).unlink(), "missing"),
    "index row lost": (_drop_row, "missing"),
}


def _frames(clip: Path) -> int:
    out = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(clip)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(out.strip())


def _export_args(cfg: Path, out: Path) -> list[str]:
    return [
        "export", "--config", str(cfg), "--from", "@0", "--to", "@4000000000",
        "--case", "PV-9", "--out", str(out),
    ]  # fmt: skip


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_one_damaged_segment_exports_the_rest_and_says_so(
    unit: Unit, damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, data, csu = unit
    mutate, kind = DAMAGE[damage]
    mutate(data)
    out = tmp_path / "bundle"
    capsys.readouterr()
    assert edgectl(_export_args(cfg, out)) == 3  # written, but partial
    printed = capsys.readouterr().out
    assert f"damaged: cam1 #2: {kind} (not in the bundle)" in printed and "PARTIAL" in printed

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["partial"] is True
    assert [(d["camera"], d["first_sequence"], d["last_sequence"], d["kind"])
            for d in manifest["damaged"]] == [("cam1", 2, 2, kind)]  # fmt: skip
    assert [s["sequence"] for s in manifest["segments"]] == [0, 1, 3, 4]
    assert not out.with_name("bundle.partial").exists()

    public = load_signing_public_key(keys_dir_of(data))
    records, problems = read_audit(layout.vault_dir(data) / "audit.log", public)
    assert problems == [] and records[-1].action == "export"
    assert records[-1].details["partial"] is True
    assert records[-1].details["damaged"][0]["first_sequence"] == 2

    # the CSU verifies what is there, opens it, and shows the hole: never silently
    clip = tmp_path / "clip.mp4"
    pin = ["--unit-key", str(keys_dir_of(data) / "unit-signing.pub.pem")]
    code = edge_csu(["open", str(out), "--key", str(csu.key), "--out", str(clip), *pin])
    opened = capsys.readouterr().out
    assert code == 3, opened
    assert "damaged: cam1 #2" in opened and "PARTIAL" in opened
    assert _frames(clip) == 40  # the four intact seconds, as ffprobe counts them
    assert verify_bundle(out, unit_public_key=public).damaged[0].first_sequence == 2


def test_a_hole_the_manifest_does_not_declare_is_refused(unit: Unit, tmp_path: Path) -> None:
    """Even signed by the unit's own key, a hole is accepted only where the manifest names it."""
    cfg, data, _csu = unit
    _segment_file(data, 2).unlink()
    out = tmp_path / "bundle"
    assert edgectl(_export_args(cfg, out)) == 3
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["damaged"], manifest["partial"] = [], False
    body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    (out / "manifest.json").write_bytes(body)
    key = load_signing_key(keys_dir_of(data))
    (out / "manifest.sig").write_bytes(key.sign(_DOMAIN + hashlib.sha256(body).digest()))
    with pytest.raises(IntegrityError, match=r"cam1: sequences 2\.\.2 missing"):
        verify_bundle(out, unit_public_key=key.public_key())


def test_a_lost_envelope_leaves_out_only_what_it_opened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    csu = make_csu(tmp_path / "csu")
    segments = encoded_segments(seconds=4.0)
    vault = open_vault(data, csu, epoch_seconds=0.0)  # one epoch (and envelope) per segment
    for seg in segments:
        vault.write(seg)
    vault.close()
    envelopes = sorted((layout.vault_dir(data) / "epochs" / "cam1").rglob("*.env"))
    assert len(envelopes) == 4
    epoch = fmt.parse_segment(_segment_file(data, 1).read_bytes()).header.epoch_id
    next(e for e in envelopes if epoch.hex() in e.name).unlink()  # the one #1 needs
    key = load_signing_key(keys_dir_of(data))
    result = export_bundle(
        data,
        start_ns=segments[0].start_wall_ns,
        end_ns=segments[-1].end_wall_ns,
        case="PV-10",
        out_dir=tmp_path / "b",
        device_id="unit-1",
        signing_key=key,
    )
    assert result.partial and result.segments == 3 and result.envelopes == 3
    [part] = result.damaged
    assert (part.first_sequence, part.kind.value) == (1, "no-envelope")
    assert "envelope missing" in part.detail
    assert verify_bundle(result.path, unit_public_key=key.public_key()).partial


def test_failed_and_interrupted_exports_are_audited_and_leave_nothing(
    unit: Unit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, data, _csu = unit
    public = load_signing_public_key(keys_dir_of(data))

    def last_record() -> tuple[str, dict[str, object]]:
        records, problems = read_audit(layout.vault_dir(data) / "audit.log", public)
        assert problems == []
        return records[-1].action, records[-1].details

    # every segment damaged: nothing to export, no bundle, the failure audited
    for n in range(5):
        _flip(_segment_file(data, n))
    out = tmp_path / "bundle"
    capsys.readouterr()
    assert edgectl(_export_args(cfg, out)) == 2
    assert "nothing intact to export" in capsys.readouterr().err
    action, details = last_record()
    assert action == "export-failed" and details["case"] == "PV-9"
    assert "nothing intact" in str(details["reason"])
    assert not out.exists() and not out.with_name("bundle.partial").exists()

    # Ctrl-C half way (injected through the progress callback): audited as aborted
    for n in range(5):
        _flip(_segment_file(data, n))  # flipped back: intact again

    def interrupt(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_bundle(
            data,
            start_ns=0,
            end_ns=4_000_000_000 * 10**9,
            case="PV-11",
            out_dir=out,
            device_id="unit-7",
            signing_key=load_signing_key(keys_dir_of(data)),
            progress=interrupt,
        )
    action, details = last_record()
    assert action == "export-aborted" and details["case"] == "PV-11"
    assert not out.exists() and not out.with_name("bundle.partial").exists()
    with pytest.raises(VaultError, match="no recording in that range"):
        export_bundle(
            data, start_ns=0, end_ns=1, case="PV-12", out_dir=out, device_id="unit-7",
            signing_key=load_signing_key(keys_dir_of(data)),
        )  # fmt: skip
    assert last_record()[0] == "export-failed"


def test_a_replaced_segment_is_exported_with_its_broken_links_declared(
    unit: Unit, tmp_path: Path
) -> None:
    """A segment signed by the unit that does not continue the chain (written over the original):
    authentic, so exported, with both broken links named; the verifier reports them."""
    cfg, data, _csu = unit
    key = load_signing_key(keys_dir_of(data))
    path = _segment_file(data, 2)
    seg = fmt.parse_segment(path.read_bytes())
    other = dataclasses.replace(seg.header, prev_hash=bytes(32))
    path.write_bytes(fmt.sign_segment(other, bytes(seg.ciphertext), key))
    out = tmp_path / "bundle"
    assert edgectl(_export_args(cfg, out)) == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["sequence"] for s in manifest["segments"]] == [0, 1, 2, 3, 4]
    assert [(d["first_sequence"], d["kind"]) for d in manifest["damaged"]] == [
        (2, "chain-broken"),
        (3, "chain-broken"),
    ]
    verified = verify_bundle(out, unit_public_key=key.public_key())
    assert [str(d) for d in verified.damaged] == [
        "cam1 #2: chain-broken (in the bundle): does not continue #1 (replaced or reordered)",
        "cam1 #3: chain-broken (in the bundle): does not continue #2 (replaced or reordered)",
    ]
    # undeclared, the same break is refused
    manifest["damaged"], manifest["partial"] = [], False
    body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    (out / "manifest.json").write_bytes(body)
    (out / "manifest.sig").write_bytes(key.sign(_DOMAIN + hashlib.sha256(body).digest()))
    with pytest.raises(IntegrityError, match=r"cam1#2: chain broken"):
        verify_bundle(out, unit_public_key=key.public_key())
